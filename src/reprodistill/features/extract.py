"""Fixed-view teacher features, computed once per split: the frozen FM dominates cost, so never run it twice.

(:mod:`reprodistill.features.cache` stores them on disk across runs.)
"""

from __future__ import annotations

from typing import Callable, Optional, Protocol, cast

import torch
from torch.utils.data import DataLoader, Dataset

from reprodistill.models.teacher import Teacher
from reprodistill.util.progress import progress

FEATURE_KINDS = ("pooled", "map")


class ImageItems(Protocol):
    """What an FM pass reads: a sized dataset of ``{'image': uint8 [C,H,W], ...}`` items (an
    :class:`~reprodistill.data.dataset.ImageDataset`, or an augmented view of one)."""

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]: ...


@torch.inference_mode()
def extract_features(
    teacher: Teacher,
    dataset: ImageItems,
    batch_size: int,
    device: torch.device,
    kind: str = "pooled",
    desc: str = "teacher features",
    num_workers: int = 0,
    fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> torch.Tensor:
    """Teacher features of every image of ``dataset`` in order (float32, CPU).

    Args:
        kind: 'pooled' for [N, D] vectors, 'map' for the last feature map [N, C, h, w] (or tokens [N, T, C]).
        fn: Instead of ``kind``, any function of a uint8 image batch (e.g. the input of one FM stage).
    """
    if fn is None:
        if kind not in FEATURE_KINDS:
            raise ValueError(f"unknown teacher feature kind {kind!r}; use one of {FEATURE_KINDS}")
        fn = teacher.features if kind == "pooled" else teacher.feature_maps
    loader: DataLoader = DataLoader(
        cast(Dataset, dataset), batch_size=batch_size, shuffle=False, num_workers=num_workers
    )
    out, pos = None, 0
    for batch in progress(loader, desc):
        f = fn(batch["image"].to(device)).cpu()
        if out is None:  # allocate once the per-image shape is known (maps depend on the input size)
            out = torch.empty(len(dataset), *f.shape[1:])
        out[pos : pos + len(f)] = f
        pos += len(f)
    return out if out is not None else torch.empty(0)  # an empty dataset
