"""`rkd`: Relational KD (Park et al., 2019) between the student's and the FM's pooled embeddings, plus CE.

Distance weight 25, angle weight 50 (the paper's). RKD needs no teacher logits; the probe is still fitted so the
probed FM's metrics are reported beside the student's, like the other KD baselines.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from reprodistill.losses import rkd_angle_loss, rkd_distance_loss
from reprodistill.methods.base import Batch, register_method
from reprodistill.methods.fm_kd import ProbedFMDistillation


@dataclass
class RKDOptions:
    distance_weight: float = 25.0
    angle_weight: float = 50.0


@register_method("rkd")
class RelationalKD(ProbedFMDistillation):
    Options = RKDOptions
    loss_weights = ("distance_weight", "angle_weight")

    def distill_loss(self, s: dict[str, torch.Tensor], batch: Batch) -> dict[str, tuple[float, torch.Tensor]]:
        o = self.options
        t = self.pooled(batch["teacher_features"])
        return {
            "rkd_distance": (o.distance_weight, rkd_distance_loss(s["features"], t)),
            "rkd_angle": (o.angle_weight, rkd_angle_loss(s["features"], t)),
        }
