"""A user's own data: class names from the source, 16-bit / float / palette / RGBA images, one-class refusal,
file modes that follow the umask."""

import os

import numpy as np
import pytest
from PIL import Image

from reprodistill.config import DataConfig, load_config
from reprodistill.data import load_data
from reprodistill.data.image_files import load_image_file
from reprodistill.errors import DataError
from reprodistill.util.checkpoint import write_text


def _folder(root, classes, n=4, size=16):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def test_class_names_come_from_the_data_never_from_a_preset(tmp_path):
    src = _folder(tmp_path / "pets", ["cat", "dog", "fox"], n=12)
    for preset in ("default", "bench", "pneumonia-bench"):
        cfg = load_config(preset, [f"data.source={src}"])
        assert load_data(cfg.data).class_names == ["cat", "dog", "fox"]


def test_medmnist_sets_carry_their_own_label_names(pneumonia_path, breast_path):
    pn = load_data(DataConfig(source="medmnist:pneumoniamnist", root=str(pneumonia_path.parent)))
    br = load_data(DataConfig(source="medmnist:breastmnist", root=str(breast_path.parent)))
    assert pn.class_names == ["normal", "pneumonia"] and br.class_names == ["malignant", "normal, benign"]


def test_one_class_training_data_is_refused_up_front(tmp_path):
    src = _folder(tmp_path / "one", ["pneumonia"], n=20)
    with pytest.raises(DataError, match="one class only"):
        load_data(DataConfig(source=str(src)))


@pytest.mark.parametrize("mode", ["I;16", "I", "F", "P", "RGBA", "LA"])
def test_high_bit_depth_and_other_modes_keep_their_contrast(tmp_path, mode):
    ramp = np.linspace(0, 1, 64 * 64).reshape(64, 64)
    if mode == "I;16":
        im = Image.fromarray((ramp * 65535).astype(np.uint16))  # a 16-bit X-ray: PIL's convert('L') made it white
    elif mode == "I":
        im = Image.fromarray((ramp * 4095).astype(np.int32), mode="I")  # 12-bit values stored in 32-bit ints
    elif mode == "F":
        im = Image.fromarray((ramp * 3000.0 - 1000.0).astype(np.float32), mode="F")  # e.g. Hounsfield units
    else:
        im = Image.fromarray((ramp * 255).astype(np.uint8)).convert(mode)
    path = tmp_path / ("x.tif" if mode in ("I", "F") else "x.png")
    im.save(path)
    arr = load_image_file(str(path), 1, (64, 64))[..., 0].astype(float)
    assert arr.min() <= 10 and arr.max() >= 245  # the full range survives: not all white, not all black
    assert np.corrcoef(arr.ravel(), ramp.ravel())[0, 1] > 0.99


def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_text(tmp_path / "report.md", "x")
        assert (tmp_path / "report.md").stat().st_mode & 0o777 == 0o644  # mkstemp alone gave 0600
    finally:
        os.umask(old)


def test_long_work_logs_progress_lines_when_not_on_a_terminal(caplog):
    import logging

    from reprodistill.util.progress import progress

    with caplog.at_level(logging.INFO, logger="reprodistill"):
        assert sum(progress(range(20), "fm pass", unit="batches")) == 190
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("fm pass")]
    assert 5 <= len(lines) <= 10 and "10/20 batches (50%" in " ".join(lines)


def test_a_locked_run_folder_stops_a_second_process_with_a_clear_message(tmp_path, small_npz):
    from reprodistill.engine.run import run
    from reprodistill.errors import ReprodistillError
    from reprodistill.util.lock import FolderLock

    cfg = load_config("default", [f"data.source={small_npz}", "methods=[student]", "train.steps=2", "train.epochs=1"])
    with FolderLock(tmp_path / "run"):
        with pytest.raises(ReprodistillError, match=r"run is in use by pid \d+"):
            run(cfg, run_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "config.yaml").exists()  # nothing was started or written


def test_unwritable_cache_is_reported_before_any_fm_pass(tmp_path, small_npz):
    from reprodistill.engine.run import run
    from reprodistill.errors import ReprodistillError

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cfg = load_config("default", [f"data.source={small_npz}", f"teacher.cache_dir={blocker / 'cache'}"])
    with pytest.raises(ReprodistillError, match=r"is not writable .* set teacher.cache_dir"):
        run(cfg, run_dir=tmp_path / "run")


def test_cache_follows_xdg_and_lists_and_clears(tmp_path, monkeypatch):
    import subprocess
    import sys

    from reprodistill.features.cache import remove_stale_temp_files, resolve_cache_dir

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    root = resolve_cache_dir("auto")
    assert root == tmp_path / "xdg" / "reprodistill" / "features"
    root.mkdir(parents=True)
    np.save(root / "abc.npy", np.zeros((4, 8), dtype=np.float16))
    (root / "abc.json").write_text('{"kind": "pooled", "split": "train", "shape": [4, 8]}')
    stale, fresh = root / ".abc.npy.x1.tmp", root / ".abc.npy.x2.tmp"
    stale.write_text("half"), fresh.write_text("half")
    os.utime(stale, (0, 0))
    assert remove_stale_temp_files(root) == 1 and fresh.exists() and not stale.exists()
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    out = subprocess.run(
        [sys.executable, "-m", "reprodistill", "cache", "list"], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0 and "abc.npy  pooled train [4, 8]" in out.stdout
    subprocess.run([sys.executable, "-m", "reprodistill", "cache", "clear"], env=env, check=True, capture_output=True)
    assert not any(root.iterdir())


def test_a_huge_image_gives_one_log_line_not_a_bare_warning(tmp_path, caplog, recwarn):
    """Pillow's decompression-bomb warning (a 12000x12000 PNG) printed a bare `warnings.warn(str(msg))` line."""
    import logging

    from PIL import Image

    Image.fromarray(np.zeros((9000, 9000), np.uint8)).save(tmp_path / "big.png")  # 81 MP, over the limit set below
    Image.MAX_IMAGE_PIXELS, old = 50_000_000, Image.MAX_IMAGE_PIXELS
    try:
        caplog.set_level(logging.WARNING, logger="reprodistill")
        assert load_image_file(str(tmp_path / "big.png"), 1, (28, 28)).shape == (28, 28, 1)
    finally:
        Image.MAX_IMAGE_PIXELS = old
    assert "big.png: 9000x9000 pixels, very large" in caplog.text
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def test_a_new_image_format_is_one_class_and_every_reader_uses_it(tmp_path):
    """A toy format registered here (suffix .toy: a text file holding one grey value) is found in a class-folder
    data set, checked before training with its own cause, decoded by the data set, and named among the suffixes;
    no other file knows it."""
    from reprodistill.config import DataConfig
    from reprodistill.data import load_data
    from reprodistill.data.dataset import ImageDataset
    from reprodistill.data.formats import FORMATS, ImageFormat, register_format
    from reprodistill.data.image_files import image_suffixes
    from reprodistill.errors import DataError

    @register_format("toy")
    class ToyFormat(ImageFormat):
        suffixes = frozenset({".toy"})

        @classmethod
        def problem(cls, path):
            return None if path.read_text().strip() else "is empty"

        @classmethod
        def decode(cls, path, settings):
            return np.full((8, 8), int(path.read_text()), dtype=np.uint8), None

    try:
        values = {}
        for c, base in (("a", 10), ("b", 200)):
            (tmp_path / "set" / c).mkdir(parents=True)
            for i in range(6):
                (tmp_path / "set" / c / f"{i}.toy").write_text(str(base + i))
                values[str(tmp_path / "set" / c / f"{i}.toy")] = base + i
        cfg = DataConfig(source=str(tmp_path / "set"), load_size=8, channels=1, val_fraction=0.2, test_fraction=0.2)
        data = load_data(cfg)
        assert data.class_names == ["a", "b"] and len(data.train) + len(data.val) + len(data.test) == 12
        item = ImageDataset(data.train, 1, (8, 8))[0]["image"]
        assert item.shape == (1, 8, 8) and int(item[0, 0, 0]) == values[data.train.paths[0]]
        assert ".toy" in image_suffixes()
        (tmp_path / "set" / "a" / "bad.toy").write_text("")
        with pytest.raises(DataError, match="a/bad.toy: is empty.*data.skip_bad_images=true"):
            load_data(cfg)
        with pytest.raises(ValueError, match="already belong to 'toy'"):
            register_format("toy-again")(type("Again", (ToyFormat,), {}))
    finally:
        FORMATS.unregister("toy")
    assert ".toy" not in image_suffixes()
