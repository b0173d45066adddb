"""`dkd`: Decoupled KD (Zhao et al., 2022) from the linearly probed FM: ``CE + ramp * (alpha TCKD + beta NCKD)``.

The distillation weight ramps linearly from 0 over the first ``warmup`` fraction of training (the paper warms up
for 20 of 240 epochs, about 0.08). For two classes NCKD is zero, so on binary tasks this is ``alpha`` x KD.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from reprodistill.losses import dkd_parts
from reprodistill.methods.base import Batch, register_method
from reprodistill.methods.fm_kd import ProbedFMDistillation


@dataclass
class DKDOptions:
    alpha: float = 1.0
    beta: float = 8.0
    temperature: float = 4.0
    warmup: float = 0.1


@register_method("dkd")
class DecoupledKD(ProbedFMDistillation):
    Options = DKDOptions
    loss_weights = ("alpha", "beta")
    uses_unlabelled = False  # TCKD / NCKD split the classes at the true label

    def distill_loss(self, s: dict[str, torch.Tensor], batch: Batch) -> dict[str, tuple[float, torch.Tensor]]:
        o = self.options
        ramp = min(1.0, self.progress / o.warmup) if o.warmup > 0 else 1.0
        tckd, nckd = dkd_parts(s["logits"], self.teacher_logits(batch), batch["label"], o.temperature)
        return {"tckd": (ramp * o.alpha, tckd), "nckd": (ramp * o.beta, nckd)}
