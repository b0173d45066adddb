"""Relational KD (Park et al., 2019): match pairwise distances and triplet angles of the two embeddings.

Distances are normalised by their mean over the batch; both terms use the smooth-L1 (Huber, delta 1) loss. The
teacher side carries no gradient. Paper weights: distance 25, angle 50.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pairwise_distances(e: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Euclidean distance matrix [B,B] with an exact zero diagonal (safe gradient: clamped before the sqrt)."""
    sq = e.pow(2).sum(1)
    d = (sq[:, None] + sq[None, :] - 2 * e @ e.t()).clamp(min=eps).sqrt()
    return d * (1 - torch.eye(len(e), device=e.device, dtype=d.dtype))


def _normalised_distances(e: torch.Tensor) -> torch.Tensor:
    d = pairwise_distances(e)
    return d / d[d > 0].mean().clamp(min=1e-12)


def _angles(e: torch.Tensor) -> torch.Tensor:
    """cos of the angle at every anchor j between (i - j) and (k - j), flattened [B*B*B]."""
    diff = F.normalize(e[None, :, :] - e[:, None, :], p=2, dim=2)
    return torch.bmm(diff, diff.transpose(1, 2)).flatten()


def rkd_distance_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    if len(student) < 2:  # no pair: nothing to match (a batch of one would give 0/0)
        return student.sum() * 0.0
    with torch.no_grad():
        t = _normalised_distances(teacher.float())
    return F.smooth_l1_loss(_normalised_distances(student.float()), t)


def rkd_angle_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    if len(student) < 3:  # no triplet
        return student.sum() * 0.0
    with torch.no_grad():
        t = _angles(teacher.float())
    return F.smooth_l1_loss(_angles(student.float()), t)


def rkd_loss(
    student: torch.Tensor, teacher: torch.Tensor, distance_weight: float = 25.0, angle_weight: float = 50.0
) -> torch.Tensor:
    """``w_d * L_distance + w_a * L_angle`` on embeddings [B,Ds] and [B,Dt] (dims may differ)."""
    return distance_weight * rkd_distance_loss(student, teacher) + angle_weight * rkd_angle_loss(student, teacher)
