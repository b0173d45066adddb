"""Map-space reprogramming (DRD): conv projectors from a frozen FM feature map to a student stage's input shape."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MapProjector(nn.Module):
    """[B, C_t, h, w] -> [B, C, H, W]: 1x1 conv to C channels, resize to (H, W), 3x3 conv (a small residual-free
    conv block; BatchNorm after each conv absorbs the FM's feature scale).

    Args:
        c_teacher: FM map channels.
        c_out: Target (student stage input) channels.
        size: Target (H, W).
    """

    def __init__(self, c_teacher: int, c_out: int, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = tuple(size)
        self.reduce = nn.Sequential(
            nn.Conv2d(c_teacher, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)
        )
        self.refine = nn.Sequential(nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        x = self.reduce(fmap)
        if tuple(x.shape[-2:]) != self.size:
            if x.shape[-2] >= self.size[0] and x.shape[-1] >= self.size[1]:
                x = F.adaptive_avg_pool2d(x, (self.size[0], self.size[1]))
            else:
                x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        return self.refine(x)
