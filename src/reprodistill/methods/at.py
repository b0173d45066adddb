"""`at`: attention transfer (Zagoruyko & Komodakis, 2017) from the FM's last feature map, plus CE.

Weight 1000 on the mean squared difference of normalised attention maps (the authors' setting, beta = 1e3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from reprodistill.losses import at_loss
from reprodistill.methods.base import Batch, register_method
from reprodistill.methods.fm_maps import FeatureMapDistillation


@dataclass
class ATOptions:
    weight: float = 1000.0
    p: float = 2.0
    stage: Optional[int] = None


@register_method("at")
class AttentionTransfer(FeatureMapDistillation):
    Options = ATOptions
    loss_weights = ("weight",)

    def distill_loss(self, s: dict[str, torch.Tensor], batch: Batch) -> dict[str, tuple[float, torch.Tensor]]:
        o = self.options
        return {"at": (o.weight, at_loss(s["map"], batch["teacher_features"], o.p))}
