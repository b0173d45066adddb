"""Semi-supervised consistency losses on unlabelled images: FixMatch's thresholded pseudo-label CE and Mean
Teacher's softmax MSE."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def fixmatch_loss(
    weak_logits: torch.Tensor, strong_logits: torch.Tensor, threshold: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, mask): FixMatch's unlabelled term (Sohn et al. 2020, eq. 4).

    The weak view's prediction, without gradient, is the pseudo-label ``argmax p_w``; images whose confidence
    ``max p_w`` reaches ``threshold`` contribute ``CE(strong_logits, pseudo-label)``. The sum is divided by the number
    of unlabelled images, not of confident ones (the paper's ``1 / (mu B)``), so the term grows as confidence does.
    ``mask`` is the float [N] confidence mask.
    """
    with torch.no_grad():
        p = weak_logits.detach().float().softmax(-1)
        conf, pseudo = p.max(-1)
        mask = (conf >= threshold).float()
    ce = F.cross_entropy(strong_logits.float(), pseudo, reduction="none")
    return (ce * mask).sum() / max(1, len(ce)), mask


def softmax_mse(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean Teacher's consistency (Tarvainen & Valpola 2017): squared difference of the two softmax outputs, mean over
    classes and images; the teacher side carries no gradient."""
    p_s = student_logits.float().softmax(-1)
    p_t = teacher_logits.detach().float().softmax(-1)
    return (p_s - p_t).pow(2).mean()


def sigmoid_rampup(progress: float, length: float) -> float:
    """``exp(-5 (1 - t)^2)`` with ``t = progress / length`` clipped to [0, 1] (the Mean Teacher ramp-up); 1 when
    ``length`` is 0."""
    if length <= 0:
        return 1.0
    t = min(1.0, max(0.0, progress / length))
    return math.exp(-5.0 * (1.0 - t) ** 2)
