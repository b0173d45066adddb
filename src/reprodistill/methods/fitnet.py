"""`fitnet`: FitNet hints (Romero et al., 2015) from the FM's last feature map, plus CE, in one stage.

A regressor (1x1 conv + BN, as in common FitNet code) maps the guided student stage to the FM's channels; the target
is the FM map standardised per channel with train-set statistics, because raw FM activations have arbitrary scale
(Merlin's reach the hundreds) and would swamp CE. The original two-stage schedule (hints first, then KD) is not
used: like RD, all losses train together for the same budget as every other method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from reprodistill.losses import fitnet_loss
from reprodistill.methods.base import Batch, MethodContext, register_method
from reprodistill.methods.fm_maps import FeatureMapDistillation


@dataclass
class FitNetOptions:
    weight: float = 1.0
    stage: Optional[int] = None


@register_method("fitnet")
class FitNet(FeatureMapDistillation):
    Options = FitNetOptions
    loss_weights = ("weight",)

    map_mean: torch.Tensor  # a buffer
    map_std: torch.Tensor  # a buffer

    def __init__(self, ctx: MethodContext, options: FitNetOptions) -> None:
        super().__init__(ctx, options)
        c_s, c_t = self.student_map_shape[0], self.teacher_channels
        self.regressor = nn.Sequential(nn.Conv2d(c_s, c_t, 1, bias=False), nn.BatchNorm2d(c_t))
        self.register_buffer("map_mean", torch.zeros(1, c_t, 1, 1))
        self.register_buffer("map_std", torch.ones(1, c_t, 1, 1))

    def prepare_features(self, train_features: torch.Tensor) -> None:
        f = train_features.float()
        self.map_mean.copy_(f.mean(dim=(0, 2, 3)).view(1, -1, 1, 1))
        self.map_std.copy_(f.std(dim=(0, 2, 3)).clamp_min(1e-6).view(1, -1, 1, 1))

    def distill_loss(self, s: dict[str, torch.Tensor], batch: Batch) -> dict[str, tuple[float, torch.Tensor]]:
        target = (batch["teacher_features"] - self.map_mean) / self.map_std
        return {"hint": (self.options.weight, fitnet_loss(self.regressor(s["map"]), target))}
