"""FitNet hint loss (Romero et al., 2015): a regressor maps the student's guided layer onto the teacher's hint layer.

The regressor (1x1 conv + BN) lives in the method; this module holds the loss on the regressed map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def match_size(teacher_map: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a teacher map [B,C,h,w] to the student's spatial ``size`` (adaptive average pooling down, bilinear up)."""
    if tuple(teacher_map.shape[-2:]) == tuple(size):
        return teacher_map
    if teacher_map.shape[-2] >= size[0] and teacher_map.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(teacher_map, size)
    return F.interpolate(teacher_map, size=size, mode="bilinear", align_corners=False)


def fitnet_loss(regressed: torch.Tensor, teacher_map: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the regressed student map and the teacher map, resized to the student's size."""
    target = match_size(teacher_map.float(), (regressed.shape[-2], regressed.shape[-1]))
    return F.mse_loss(regressed.float(), target)
