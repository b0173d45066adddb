"""Cached augmented views: deterministic views, and the student sees exactly the view whose FM features it gets."""

import numpy as np
import pytest
import torch

from reprodistill.config import DataConfig
from reprodistill.data import ImageDataset, load_data
from reprodistill.features.extract import extract_features
from reprodistill.features.views import AugmentedView, CachedViews


@pytest.fixture()
def train_ds(small_npz):
    data = load_data(DataConfig(source=str(small_npz)))
    return ImageDataset(data.train, data.channels, data.load_size)


def test_views_are_deterministic_and_view_zero_is_the_image(train_ds):
    v0 = AugmentedView(train_ds, 0, shift=2, flip=True)
    assert all(torch.equal(v0[i]["image"], train_ds[i]["image"]) for i in range(5))
    a, b = AugmentedView(train_ds, 1, 2, True), AugmentedView(train_ds, 1, 2, True)
    assert all(torch.equal(a[i]["image"], b[i]["image"]) for i in range(10))
    changed = sum(not torch.equal(a[i]["image"], train_ds[i]["image"]) for i in range(20))
    assert changed >= 15  # 25 shift/flip combinations, one of them the identity
    other = AugmentedView(train_ds, 2, 2, True)
    assert any(not torch.equal(a[i]["image"], other[i]["image"]) for i in range(10))


def test_sampled_images_match_the_features_of_their_view(train_ds, tiny_teacher):
    teacher = tiny_teacher(32)
    feats = [extract_features(teacher, AugmentedView(train_ds, k, 2, True), 32, torch.device("cpu")) for k in range(3)]
    views = CachedViews(feats, shift=2, flip=True)
    index = torch.arange(12)
    raw = torch.stack([train_ds[i]["image"] for i in range(12)])
    g = torch.Generator().manual_seed(0)
    images, f = views.sample(raw, index, g)
    assert torch.allclose(teacher.features(images), f, atol=1e-4)
    # the choice of view varies across images and steps
    images2, _ = views.sample(raw, index, g)
    assert not torch.equal(images, images2)


def _tiny_fm_run(tmp_path, small_npz) -> list[str]:
    """Overrides of an `rd` run on ``small_npz`` with a random resnet10t checkpoint as the FM (saved in
    ``tmp_path``) and its feature cache in ``tmp_path / 'cache'``."""
    import timm

    torch.manual_seed(0)
    torch.save(timm.create_model("resnet10t", num_classes=0).state_dict(), tmp_path / "fm.pt")
    return [
        f"data.source={small_npz}", "methods=[rd]", "student.name=resnet10t", f"teacher.name={tmp_path / 'fm.pt'}",
        "teacher.arch=resnet10t", "teacher.image_size=32", f"teacher.cache_dir={tmp_path / 'cache'}",
        "train.steps=null", "train.batch_size=16",
    ]  # fmt: skip


@pytest.mark.slow
def test_run_with_cached_views(tmp_path, small_npz):
    from reprodistill.config import load_config
    from reprodistill.engine.run import run

    over = [*_tiny_fm_run(tmp_path, small_npz), "teacher.views=3", "train.epochs=2", "train.augment_flip=true"]
    res = run(load_config("default", over), run_dir=tmp_path / "run")
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 5  # train x 3 views, val, test
    r = res.results[0]
    assert np.isfinite(r.test["auc"]) and r.fm_feature_s > 0
    again = run(load_config("default", over), run_dir=tmp_path / "run2")
    assert again.teacher_feature_time_s < 0.5 * res.teacher_feature_time_s + 1.0  # all views came from the cache
    assert again.results[0].test["auc"] == pytest.approx(r.test["auc"])


def test_strong_views_are_fixed_per_view_and_image_and_match_their_features(train_ds, tiny_teacher):
    """teacher.view_augment=strong: view k >= 1 is RandAugment + Cutout after the shift / flip, the same in every
    run, view 0 stays the image; a sampled batch shows the student exactly the strong view whose FM features it
    gets (the teacher scores the view the student sees)."""
    from reprodistill.features.views import ViewAugment

    how = ViewAugment(2, True, strong=True)
    a, b = AugmentedView(train_ds, 1, 2, True, how), AugmentedView(train_ds, 1, 2, True, how)
    weak = AugmentedView(train_ds, 1, 2, True)
    assert all(torch.equal(a[i]["image"], b[i]["image"]) for i in range(8))
    assert sum(not torch.equal(a[i]["image"], weak[i]["image"]) for i in range(8)) >= 7  # RandAugment + Cutout
    assert torch.equal(AugmentedView(train_ds, 0, 2, True, how)[3]["image"], train_ds[3]["image"])
    teacher = tiny_teacher(32)
    feats = [extract_features(teacher, AugmentedView(train_ds, k, 2, True, how), 32, torch.device("cpu"))
             for k in range(3)]  # fmt: skip
    size = tuple(train_ds[0]["image"].shape[-2:])
    views = CachedViews(feats, 2, True, how, size)
    index = torch.arange(12)
    raw = torch.stack([train_ds[i]["image"] for i in range(12)])
    images, f = views.sample(raw, index, torch.Generator().manual_seed(0))
    assert torch.allclose(teacher.features(images), f, atol=1e-4)


def test_views_of_a_subset_keep_the_augmentation_the_fm_saw(train_ds):
    """With unlabelled images the views are drawn for the whole training split and then split into labelled /
    labelled + unlabelled orders: each image must keep its own view (it used to get the view drawn for its new
    position, so the student saw another shift than the one the FM's features were of)."""
    from reprodistill.features.views import ViewAugment

    n = 16
    how = ViewAugment(2, True, strong=True)
    split = torch.utils.data.Subset(train_ds, range(n))  # the "whole training split" of this test
    # "features" = the view images themselves, so a mismatch between image and features shows
    feats = [torch.stack([AugmentedView(split, k, 2, True, how)[i]["image"] for i in range(n)]).float()
             for k in range(3)]  # fmt: skip
    size = tuple(train_ds[0]["image"].shape[-2:])
    every = CachedViews(feats, 2, True, how, size)
    order = torch.tensor([5, 11, 0, 3, 15, 8, 1, 2, 4, 6, 7, 9, 10, 12, 13, 14])  # labelled first, then the rest
    mixed = every.subset(order)
    raw = torch.stack([train_ds[int(i)]["image"] for i in order])
    for seed in range(3):
        images, f = mixed.sample(raw, torch.arange(n), torch.Generator().manual_seed(seed))
        assert torch.equal(images.float(), f)


def test_mixed_views_mix_each_unlabelled_image_with_an_unlabelled_partner_by_hand(train_ds):
    """teacher.view_augment=mixup: view k >= 1 of a mixable (unlabelled) image is round(w * its weak view + (1 - w) *
    its partner under the same shift / flip), partner among the mixable images, w in (0, 1), both fixed per view
    and image; labelled images keep their weak view; the cache key names the mixable set."""
    from reprodistill.data.transforms import apply_augment
    from reprodistill.features.views import ViewAugment, view_id

    n = 16
    split = torch.utils.data.Subset(train_ds, range(n))
    mixable = torch.arange(8, 16)
    how = ViewAugment(2, True, mix=True)
    view = AugmentedView(split, 1, 2, True, how, mixable)
    weak = AugmentedView(split, 1, 2, True)
    p = view.params
    assert p.partner is not None and p.weight is not None
    for i in range(8):
        assert torch.equal(view[i]["image"], weak[i]["image"])
    assert set(p.partner[8:].tolist()) == set(range(8, 16)) and (p.partner[8:] != torch.arange(8, 16)).sum() >= 6
    assert bool(((p.weight[8:] > 0) & (p.weight[8:] < 1)).all())
    for i in range(8, 16):
        j, w = int(p.partner[i]), float(p.weight[i])
        shifted = [apply_augment(split[t]["image"][None], 2, p.dy[i : i + 1], p.dx[i : i + 1], p.mask[i : i + 1])[0]
                   for t in (i, j)]  # fmt: skip
        expected = (w * shifted[0].float() + (1 - w) * shifted[1].float()).round().clamp(0, 255).to(torch.uint8)
        assert torch.equal(view[i]["image"], expected)
    again = AugmentedView(split, 1, 2, True, how, mixable)
    assert all(torch.equal(view[i]["image"], again[i]["image"]) for i in range(n))
    keys = {view_id(1, 2, True, how, m) for m in (mixable, torch.arange(4, 16))}
    assert len(keys) == 2 and view_id(1, 2, True) not in keys


def test_mixed_views_of_a_subset_show_the_student_the_mixture_the_fm_saw(train_ds):
    from reprodistill.features.views import ViewAugment

    n = 16
    how = ViewAugment(2, True, mix=True)
    split = torch.utils.data.Subset(train_ds, range(n))
    mixable = torch.tensor([0, 2, 3, 5, 7, 9, 12, 14])
    feats = [torch.stack([AugmentedView(split, k, 2, True, how, mixable)[i]["image"] for i in range(n)]).float()
             for k in range(4)]  # fmt: skip
    size = tuple(train_ds[0]["image"].shape[-2:])
    with pytest.raises(ValueError, match="source"):
        CachedViews(feats, 2, True, how, size, mixable=mixable)
    every = CachedViews(feats, 2, True, how, size, source=split, mixable=mixable)
    order = torch.tensor([1, 4, 6, 8, 10, 11, 13, 15, 0, 2, 3, 5, 7, 9, 12, 14])  # labelled first, then the rest
    mixed = every.subset(order)
    raw = torch.stack([train_ds[int(i)]["image"] for i in order])
    for seed in range(3):
        images, f = mixed.sample(raw, torch.arange(n), torch.Generator().manual_seed(seed))
        assert torch.equal(images.float(), f)


@pytest.mark.slow
def test_run_with_mixed_views_of_the_unlabelled_images(tmp_path, small_npz):
    from reprodistill.config import load_config
    from reprodistill.engine.run import run

    over = [*_tiny_fm_run(tmp_path, small_npz), "teacher.views=2", "teacher.view_augment=mixup", "data.fraction=0.5",
            "data.unlabelled=rest", "train.epochs=1"]  # fmt: skip
    r = run(load_config("default", over), run_dir=tmp_path / "run").results[0]
    assert np.isfinite(r.test["auc"])
    metas = [p.read_text() for p in (tmp_path / "cache").glob("*.json")]
    assert sum("-mixU01-" in m for m in metas) == 1  # the one mixed view of the training split


def test_mixup_views_need_unlabelled_images():
    from reprodistill.config import load_config
    from reprodistill.errors import ConfigError

    with pytest.raises(ConfigError, match="data.unlabelled"):
        load_config("default", ["teacher.view_augment=mixup", "teacher.views=4"])
    with pytest.raises(ConfigError, match="teacher.views"):
        load_config("default", ["teacher.view_augment=mixup", "data.unlabelled=rest"])
