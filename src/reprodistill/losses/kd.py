"""Hinton knowledge distillation: temperature-scaled KL divergence between teacher and student class distributions."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """``T^2 * KL(softmax(z_t/T) || softmax(z_s/T))``, averaged over the batch (Hinton et al., 2015).

    The T^2 factor keeps gradient magnitudes comparable across temperatures.
    """
    t = temperature
    log_p_s = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.float() / t, dim=-1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * (t * t)


def kd_rows(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """[N] the terms of :func:`kd_loss` per image (their mean is :func:`kd_loss`), for a KD term that weighs images
    differently."""
    t = temperature
    log_p_s = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.float() / t, dim=-1)
    return F.kl_div(log_p_s, log_p_t, reduction="none", log_target=True).sum(-1) * (t * t)


def mixture_target_logits(logits: list[torch.Tensor], weights: list[float], temperature: float) -> torch.Tensor:
    """Logits whose softmax at ``temperature`` is the weighted mixture of the teachers' softened distributions,
    ``sum_i w_i softmax(z_i / T)`` (weights summing to 1): an ensemble of teachers as one KD target (Hinton et al.,
    2015, average the soft targets). ``T * log`` of the mixture (a zero-weight teacher drops out; a single teacher's
    logits come back shifted by a constant per row, the same target)."""
    total = sum(weights)
    if abs(total - 1.0) > 1e-6 or min(weights) < 0:
        raise ValueError(f"mixture weights must be >= 0 and sum to 1, got {weights}")
    mix = torch.stack([w * F.softmax(z.float() / temperature, dim=-1) for z, w in zip(logits, weights)]).sum(0)
    return temperature * torch.log(mix.clamp_min(torch.finfo(torch.float32).tiny))
