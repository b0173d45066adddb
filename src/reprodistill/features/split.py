"""The contract between the engine and a method for one split of the data: its images and, once computed, the frozen
FM's fixed-view features of every image (or a function that runs the FM on each batch)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from reprodistill.data.dataset import ImageDataset
from reprodistill.features.fm_pass import FMPass
from reprodistill.features.views import CachedViews


@dataclass
class FeatureSplit:
    """A dataset plus (optionally) its fixed-view teacher features, indexed like the dataset."""

    dataset: ImageDataset
    teacher_features: Optional[torch.Tensor] = None
    # Alternative to the cache: computes teacher features of each (augmented) uint8 batch on the fly.
    online_teacher: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    # Training split only: K cached augmented views; each image then shows one of them (student and FM alike).
    views: Optional[CachedViews] = None
    # Training split only: items from this index on are unlabelled (data.unlabelled); batches mix both parts.
    n_labelled: Optional[int] = None
    unlabelled_share: float = 0.5


def split_teacher_features(split: FeatureSplit, fm: FMPass) -> tuple[torch.Tensor, torch.Tensor]:
    """(fixed-view teacher features, labels) of a whole engine split on ``fm.device``: cached, or computed once
    with the split's online FM."""
    labels = torch.as_tensor(split.dataset.split.labels, dtype=torch.long, device=fm.device)
    if split.teacher_features is not None:
        return split.teacher_features.float().to(fm.device), labels
    if split.online_teacher is None:
        raise ValueError("this method needs teacher features, but the split carries neither a cache nor an FM")
    return fm.features(split.dataset, desc="teacher features", fn=split.online_teacher).to(fm.device), labels
