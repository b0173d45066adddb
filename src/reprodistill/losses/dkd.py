"""Decoupled KD (Zhao et al., CVPR 2022): KD split into target-class (TCKD) and non-target-class (NCKD) parts.

TCKD is the KL between the binary distributions [p_target, 1 - p_target]; NCKD is the KL between the distributions
over the non-target classes only. With two classes the non-target distribution has a single class, so NCKD is
exactly zero and DKD reduces to alpha * TCKD (for K=2 that is plain KD scaled by alpha).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dkd_parts(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, temperature: float = 4.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(TCKD, NCKD), each ``T^2 * KL(teacher || student)`` averaged over the batch."""
    t = temperature
    zs, zt = student_logits.float() / t, teacher_logits.float() / t
    gt = F.one_hot(labels, zs.shape[-1]).bool()

    def binary_log(z: torch.Tensor) -> torch.Tensor:
        """log [p_target, 1 - p_target] in log space: exact at any margin (no clamp before a log)."""
        lsm = F.log_softmax(z, dim=-1)
        return torch.stack([lsm[gt], torch.logsumexp(lsm.masked_fill(gt, float("-inf")), dim=-1)], dim=-1)

    tckd = F.kl_div(binary_log(zs), binary_log(zt), reduction="batchmean", log_target=True) * t * t
    # distributions over the non-target classes: mask the target logit out
    masked_s = F.log_softmax(zs.masked_fill(gt, -1e4), dim=-1)
    masked_t = F.softmax(zt.masked_fill(gt, -1e4), dim=-1)
    nckd = F.kl_div(masked_s, masked_t, reduction="batchmean") * t * t
    return tckd, nckd


def dkd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
) -> torch.Tensor:
    """``alpha * TCKD + beta * NCKD`` (paper defaults alpha 1, beta 8, T 4)."""
    tckd, nckd = dkd_parts(student_logits, teacher_logits, labels, temperature)
    return alpha * tckd + beta * nckd
