"""The frozen FM's side of a run: build it once, compute each feature kind's fixed-view features of every split (and
cached augmented views) once, and hand each method its :class:`FeatureSplit` s."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from reprodistill.config import RunConfig
from reprodistill.data.dataset import ImageDataset
from reprodistill.data.sources import DataBundle, UnlabelledPool
from reprodistill.features.fm_pass import FMPass
from reprodistill.features.split import FeatureSplit
from reprodistill.features.views import AugmentedView, CachedViews, ViewAugment, view_id
from reprodistill.models.teacher import Teacher
from reprodistill.models.teacher_factory import create_teacher

log = logging.getLogger("reprodistill")


def teacher_precision(precision: str, device: torch.device) -> str:
    """Resolve 'auto': bf16 autocast on a bf16-capable GPU, fp32 elsewhere (exact features on CPU)."""
    if precision != "auto":
        return precision
    return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"


def build_teacher(cfg: RunConfig, device: torch.device) -> Teacher:
    """The frozen FM of ``cfg`` on ``device`` with its precision and compile settings applied."""
    log.info("teacher: building %s", cfg.teacher.name)
    teacher = create_teacher(cfg.teacher).to(device)
    teacher.configure(teacher_precision(cfg.teacher.precision, device), cfg.teacher.compile)
    n_params = sum(p.numel() for p in teacher.parameters())
    log.info("teacher: %s, %.1fM params, input %s", teacher.name, n_params / 1e6, teacher.spec.describe())
    return teacher


@dataclass
class KindFeatures:
    """One feature kind ('pooled' or 'map') of a run: fixed-view features per split ('unlabelled' too when the run
    has unlabelled images), the training split's cached views, and the same for labelled + unlabelled images."""

    splits: dict[str, torch.Tensor]
    views: Optional[CachedViews] = None
    mixed_views: Optional[CachedViews] = None


def _fixed_and_views(
    fm: FMPass,
    datasets: dict[str, ImageDataset],
    kind: str,
    cfg: RunConfig,
    timings: dict[str, float],
    views: bool,
    mixable: Optional[torch.Tensor] = None,
) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    """Fixed-view features of every split and (with ``views``) the ``teacher.views - 1`` extra augmented views of
    the train split (``mixable``: the train images a mixed view may mix)."""
    shift, flip, how = cfg.train.augment_shift, cfg.train.augment_flip, view_augment(cfg)

    def get(name: str, ds: ImageDataset, k: int = 0) -> torch.Tensor:
        label = name if k == 0 else f"{name}-view{k}"
        source = None if k == 0 else AugmentedView(ds, k, shift, flip, how, mixable)
        view = view_id(k, shift, flip, how, mixable)
        return fm.cached(ds, kind, label, timings=timings, view=view, source=source)

    feats = {name: get(name, ds) for name, ds in datasets.items()}
    return feats, [get("train", datasets["train"], k) for k in range(1, cfg.teacher.views if views else 1)]


def view_augment(cfg: RunConfig) -> ViewAugment:
    """How the run's cached views 1..K-1 are made (``teacher.view_augment``)."""
    how = cfg.teacher.view_augment
    return ViewAugment(cfg.train.augment_shift, cfg.train.augment_flip, how == "strong", mix=how == "mixup")


def kind_features(
    fm: FMPass,
    datasets: dict[str, ImageDataset],
    data: DataBundle,
    pool: Optional[UnlabelledPool],
    kind: str,
    cfg: RunConfig,
    timings: dict[str, float],
    views: bool = True,
) -> KindFeatures:
    """The features of one kind (FM seconds per split go to ``timings``), from the on-disk cache when possible;
    ``views=False`` leaves out the training split's augmented views (no method reads them).

    With unlabelled images the FM pass covers the whole training split once (one cache entry, shared by every
    fraction and seed) and is sliced into the labelled ('train') and 'unlabelled' parts.
    """
    shift, flip, how = cfg.train.augment_shift, cfg.train.augment_flip, view_augment(cfg)

    if pool is None:
        feats, extra = _fixed_and_views(fm, datasets, kind, cfg, timings, views)
        views_of = CachedViews([feats["train"], *extra], shift, flip, how, data.load_size) if extra else None
        return KindFeatures(feats, views_of)
    full = {**datasets, "train": ImageDataset(pool.full_train, data.channels, data.load_size)}
    mixable = torch.as_tensor(pool.unlabelled_index, dtype=torch.long) if how.mix else None
    feats, extra = _fixed_and_views(fm, full, kind, cfg, timings, views, mixable)
    whole = feats["train"]
    feats["train"], feats["unlabelled"] = whole[pool.labelled_index], whole[pool.unlabelled_index]
    if not extra:
        return KindFeatures(feats)
    # the views were drawn for the whole training split in its order: their features and augmentations are taken
    # together, so each image keeps the view the FM saw
    every = CachedViews([whole, *extra], shift, flip, how, data.load_size, source=full["train"], mixable=mixable)
    lab, unl = torch.as_tensor(pool.labelled_index), torch.as_tensor(pool.unlabelled_index)
    return KindFeatures(feats, every.subset(lab), every.subset(torch.cat([lab, unl])))


def method_splits(
    datasets: dict[str, ImageDataset],
    features: Optional[KindFeatures],
    online: Optional[Callable[[torch.Tensor], torch.Tensor]],
    unlabelled: Optional[tuple[DataBundle, UnlabelledPool, float]] = None,
    views: bool = True,
) -> dict[str, FeatureSplit]:
    """The train / val / test :class:`FeatureSplit` s of one method: its kind's cached features (or the ``online``
    FM), and with ``unlabelled`` = (data, pool, share) the training split followed by the unlabelled images.
    ``views=False`` (a method that never reads a batch's features) keeps the cached augmented views out of training."""
    feats = features.splits if features else {}
    splits = {s: FeatureSplit(ds, feats.get(s), online) for s, ds in datasets.items()}
    splits["train"].views = features.views if features and views else None
    if unlabelled is not None:
        data, pool, share = unlabelled
        ds = ImageDataset(data.train.concat(pool.split), data.channels, data.load_size)
        both = None if not feats else torch.cat([feats["train"], feats["unlabelled"]])
        mixed = features.mixed_views if features and views else None
        splits["train"] = FeatureSplit(ds, both, online, mixed, n_labelled=len(data.train), unlabelled_share=share)
    return splits


def unlabelled_pool(data: DataBundle, users: list[str], cfg: RunConfig) -> Optional[UnlabelledPool]:
    """The run's unlabelled images, or None when there are none or no method (``users``) trains on them."""
    pool = data.unlabelled
    if pool is not None and not users:
        log.info("data: no method of %s uses unlabelled images; they are left out", cfg.methods)
        return None
    if pool is not None:
        log.info(
            "data: %s train on %d labelled + %d unlabelled images (%.0f%% of each batch unlabelled); the others on "
            "the labelled images only",
            users, len(data.train), len(pool.split), 100 * cfg.data.unlabelled_share,
        )  # fmt: skip
    return pool
