"""Attention transfer (Zagoruyko & Komodakis, 2017): match normalised spatial attention maps of two feature maps.

The attention map of a [B,C,h,w] tensor is ``mean_c |f|^p``, flattened and L2-normalised per sample; channel counts
may differ. The loss is the mean squared difference of the two normalised maps (as in the authors' code), so the
usual weight is large (1000).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from reprodistill.losses.fitnet import match_size


def attention_map(fmap: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """[B,C,h,w] -> [B,h*w]: ``normalize(mean_c |f|^p)``."""
    return F.normalize(fmap.float().abs().pow(p).mean(1).flatten(1), dim=1)


def at_loss(student_map: torch.Tensor, teacher_map: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """``mean((a_s - a_t)^2)`` with the teacher map resized to the student's spatial size first."""
    t = match_size(teacher_map.float(), (student_map.shape[-2], student_map.shape[-1]))
    return (attention_map(student_map, p) - attention_map(t, p)).pow(2).mean()
