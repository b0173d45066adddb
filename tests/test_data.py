import numpy as np
import pytest
import torch
from PIL import Image

from reprodistill.config import DataConfig
from reprodistill.data import ImageDataset, InputSpec, augment, find_medmnist, load_data, preprocess, subsample
from reprodistill.data.splits import stratified_split
from reprodistill.errors import DataError


def test_medmnist_flag_finds_shared_file_with_official_splits(pneumonia_path):
    data = load_data(DataConfig(source="medmnist:pneumoniamnist", root=str(pneumonia_path.parent)))
    # the official MedMNIST v2 file (MD5 28209eda62fecd6e6a2d98b1501bb15f)
    assert (len(data.train), len(data.val), len(data.test)) == (4708, 524, 624)
    assert np.bincount(data.train.labels).tolist() == [1214, 3494]
    assert np.bincount(data.val.labels).tolist() == [135, 389]
    assert np.bincount(data.test.labels).tolist() == [234, 390]


def test_breastmnist_official_counts(breast_path):
    data = load_data(DataConfig(source="medmnist:breastmnist", root=str(breast_path.parent)))
    assert [np.bincount(s.labels).tolist() for s in (data.train, data.val, data.test)] == [
        [147, 399],
        [21, 57],
        [42, 114],
    ]
    assert data.channels == 1 and data.load_size == (28, 28)
    assert data.channels == 1 and data.load_size == (28, 28) and data.num_classes == 2
    item = ImageDataset(data.test, 3, (32, 32))[0]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.uint8
    assert torch.equal(item["image"][0], item["image"][1])  # grayscale repeated to RGB


def test_missing_medmnist_file_names_searched_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as e:
        find_medmnist("nosuchflag", root=str(tmp_path / "mine"), download=False)
    msg = str(e.value)
    assert "nosuchflag.npz" in msg and str(tmp_path / "mine") in msg and "data.root=<folder>" in msg


def test_corrupt_npz_gives_clear_error(tmp_path, small_npz):
    bad = tmp_path / "broken.npz"
    bad.write_bytes(small_npz.read_bytes()[:500])
    with pytest.raises(DataError, match="broken.npz: not a readable .npz file"):
        load_data(DataConfig(source=str(bad)))
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros(3))
    with pytest.raises(DataError, match="no train_images/train_labels"):
        load_data(DataConfig(source=str(wrong)))
    with pytest.raises(DataError, match="does not exist"):
        load_data(DataConfig(source=str(tmp_path / "missing.npz")))


def test_fraction_and_k_per_class_are_stratified_nested_and_seeded():
    labels = np.array([0] * 100 + [1] * 900)
    a = subsample(labels, fraction=0.1, seed=3)
    assert np.bincount(labels[a]).tolist() == [10, 90]
    assert np.array_equal(a, subsample(labels, fraction=0.1, seed=3))
    assert set(a) <= set(subsample(labels, fraction=0.5, seed=3))  # smaller subsets nest in larger ones
    k = subsample(labels, k_per_class=5, seed=3)
    assert np.bincount(labels[k]).tolist() == [5, 5]
    assert not np.array_equal(k, subsample(labels, k_per_class=5, seed=4))
    assert np.bincount(labels[subsample(labels, fraction=0.001, seed=0)]).tolist() == [1, 1]  # every class kept


def test_stratified_split_keeps_proportions_and_is_disjoint():
    labels = np.array([0] * 50 + [1] * 150)
    keep, hold = stratified_split(labels, 0.2, seed=0)
    assert np.bincount(labels[hold]).tolist() == [10, 30]
    assert len(set(keep) & set(hold)) == 0 and len(keep) + len(hold) == 200


def _write_folder(root, arrays, n=6):
    for c, name in enumerate(["normal", "pneumonia"]):
        (root / name).mkdir(parents=True)
        idx = np.flatnonzero(arrays["train_labels"][:, 0] == c)[:n]
        for i in idx:
            Image.fromarray(arrays["train_images"][i]).save(root / name / f"{i}.png")


def test_image_folder_without_official_splits(tmp_path, pneumonia_arrays):
    _write_folder(tmp_path / "xr", pneumonia_arrays, n=20)
    data = load_data(DataConfig(source=str(tmp_path / "xr"), load_size=32, channels=1))
    assert data.class_names == ["normal", "pneumonia"]
    assert len(data.train) + len(data.val) + len(data.test) == 40
    assert np.bincount(data.test.labels).tolist() == [4, 4]  # stratified 20% hold-out
    img = ImageDataset(data.train, data.channels, data.load_size)[0]["image"]
    assert img.shape == (1, 32, 32)


def test_csv_source_with_splits_and_missing_file(tmp_path, pneumonia_arrays):
    _write_folder(tmp_path / "img", pneumonia_arrays, n=6)
    rows = ["path,label,split"]
    for c, name in enumerate(["normal", "pneumonia"]):
        for j, p in enumerate(sorted((tmp_path / "img" / name).iterdir())):
            rows.append(f"img/{name}/{p.name},{name},{['train', 'train', 'train', 'train', 'val', 'test'][j]}")
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    data = load_data(DataConfig(source=str(tmp_path / "d.csv")))
    assert (len(data.train), len(data.val), len(data.test)) == (8, 2, 2)
    assert data.channels == 3 and data.load_size == (224, 224)
    rows.append("img/none.png,normal,train")
    (tmp_path / "e.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"e.csv:14: image file .*none.png does not exist"):
        load_data(DataConfig(source=str(tmp_path / "e.csv")))


def test_corrupt_image_file_is_named_before_training(tmp_path, pneumonia_arrays):
    """Every file is checked while the data are read: a corrupt one stops there with its path relative to the data
    and the option that skips it; with the option it is left out and counted."""
    _write_folder(tmp_path / "xr", pneumonia_arrays, n=10)
    victim = sorted((tmp_path / "xr" / "normal").iterdir())[0]
    victim.write_bytes(b"not a png")
    with pytest.raises(DataError, match=f"normal/{victim.name}: cannot be read.*data.skip_bad_images=true"):
        load_data(DataConfig(source=str(tmp_path / "xr"), load_size=28))
    kept = load_data(DataConfig(source=str(tmp_path / "xr"), load_size=28, skip_bad_images=True))
    assert len(kept.train) + len(kept.val) + len(kept.test) == 19
    assert any("skipped 1 unusable image file(s) (data.skip_bad_images): 1 cannot be read" in n for n in kept.notes)


def test_class_names_must_cover_labels(small_npz):
    with pytest.raises(DataError, match="data.class_names has 1 names but the labels go up to 1"):
        load_data(DataConfig(source=str(small_npz), class_names=["only"]))


def test_preprocess_resizes_normalises_and_converts_channels():
    x = torch.full((2, 1, 28, 28), 255, dtype=torch.uint8)
    y = preprocess(x, InputSpec(size=(56, 56), channels=3, mean=(0.5,) * 3, std=(0.25,) * 3))
    assert y.shape == (2, 3, 56, 56) and torch.allclose(y, torch.full_like(y, 2.0))
    rgb = torch.zeros(1, 3, 4, 4, dtype=torch.uint8)
    rgb[:, 1] = 255
    g = preprocess(rgb, InputSpec(size=(4, 4), channels=1, mean=(0.0,), std=(1.0,)))
    assert torch.allclose(g, torch.full_like(g, 0.587))


def test_augment_shift_preserves_shape_and_is_seeded():
    x = torch.arange(2 * 8 * 8, dtype=torch.uint8).view(2, 1, 8, 8)
    a = augment(x, 2, True, torch.Generator().manual_seed(0))
    b = augment(x, 2, True, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and a.dtype == torch.uint8 and torch.equal(a, b)
    assert torch.equal(augment(x, 0, False), x)
