"""FixMatch's unlabelled term as a part any student method can add: the student's weak-view prediction on each
unlabelled image, where confident, is the pseudo-label of its strong view (RandAugment + Cutout, built by the data
layer as ``batch['image_strong']``).

``fixmatch`` is the student alone plus this term; ``kd`` and ``rd`` add it with ``consistency_weight > 0`` (their
options inherit :class:`ConsistencyOptions`) on the same unlabelled images their distillation terms use. The strong
views of the unlabelled images go through the student in one forward with the batch (as FixMatch does), so BatchNorm
sees both views in one set of batch statistics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from reprodistill.config import TrainConfig
from reprodistill.data.sources import UNLABELLED
from reprodistill.data.transforms import ExtraView, preprocess
from reprodistill.losses import fixmatch_loss
from reprodistill.models.student import Student

Batch = dict[str, torch.Tensor]


@dataclass
class ConsistencyOptions:
    """Options of a method that can add FixMatch's pseudo-label term on the unlabelled images."""

    # Weight of the term (0: off). Only with data.unlabelled; its strong views cost one more student forward of the
    # batch's unlabelled images per step.
    consistency_weight: float = 0.0
    consistency_threshold: float = 0.95


class StrongViewConsistency:
    """FixMatch's pseudo-label term on the batch's unlabelled images.

    Args:
        threshold: Confidence a weak-view prediction needs to become a pseudo-label (the paper: 0.95).
        train: The run's training settings (the weak shift / flip the strong view starts from).
        n_ops: RandAugment ops per strong view.
        cutout: Cutout side as a fraction of the image side.
    """

    def __init__(self, threshold: float, train: TrainConfig, n_ops: int = 2, cutout: float = 0.5) -> None:
        self.threshold = threshold
        self.view = ExtraView(True, train.augment_shift, train.augment_flip, n_ops, cutout)

    def features(
        self, student: Student, x_weak: torch.Tensor, batch: Batch
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(student features of the weak view [B,D], of the unlabelled images' strong views [U,D] or None)."""
        unlabelled = batch["label"] == UNLABELLED
        if not bool(unlabelled.any()):
            return student.features(x_weak), None
        x_strong = preprocess(batch["image_strong"][unlabelled], student.spec)
        f = student.features(torch.cat([x_weak, x_strong]))
        return f[: len(x_weak)], f[len(x_weak) :]

    def loss(
        self, weak_logits: torch.Tensor, strong_logits: Optional[torch.Tensor], labels: torch.Tensor
    ) -> tuple[torch.Tensor, float]:
        """(the unlabelled term, the share of unlabelled images above the threshold); 0 without unlabelled ones."""
        if strong_logits is None:
            return weak_logits.sum() * 0.0, 0.0
        loss, mask = fixmatch_loss(weak_logits[labels == UNLABELLED], strong_logits, self.threshold)
        return loss, float(mask.mean())


def optional_consistency(options: object, train: TrainConfig) -> Optional[StrongViewConsistency]:
    """The term a method's options switch on (``consistency_weight > 0``), else None."""
    if isinstance(options, ConsistencyOptions) and options.consistency_weight > 0:
        return StrongViewConsistency(options.consistency_threshold, train)
    return None


def student_features(
    consistency: Optional[StrongViewConsistency], student: Student, x_weak: torch.Tensor, batch: Batch
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(weak-view features, strong-view features of the unlabelled images or None without the term)."""
    if consistency is None:
        return student.features(x_weak), None
    return consistency.features(student, x_weak, batch)
