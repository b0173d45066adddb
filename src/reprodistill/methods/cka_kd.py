"""`cka_kd`: CKA-only distillation: ``CE + w (1 - CKA(f_s, f_t))`` on pooled features, no reprogramming, no KD.

The ablation that isolates RD's representation term: the student matches the frozen FM's own feature space.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from reprodistill.losses import cka_loss
from reprodistill.methods.base import Batch, register_method
from reprodistill.methods.fm_kd import ProbedFMDistillation


@dataclass
class CKAKDOptions:
    weight: float = 1.0
    kernel: Literal["linear", "rbf"] = "linear"
    unbiased: bool = False


@register_method("cka_kd")
class CKADistillation(ProbedFMDistillation):
    Options = CKAKDOptions
    loss_weights = ("weight",)

    def distill_loss(self, s: dict[str, torch.Tensor], batch: Batch) -> dict[str, tuple[float, torch.Tensor]]:
        o = self.options
        t = self.pooled(batch["teacher_features"])
        return {"cka": (o.weight, cka_loss(s["features"], t, o.kernel, unbiased=o.unbiased))}
