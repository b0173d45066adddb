"""`kd`: Hinton KD (T=4) from the linearly probed FM: ``CE + w * T^2 KL(p_t || p_s)``; ``teacher_head`` may learn the
probe from the unlabelled images too (self-training, label propagation, their ensemble: methods/probe_fit.py)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from reprodistill.losses import kd_loss
from reprodistill.methods.base import Batch, register_method
from reprodistill.methods.consistency import ConsistencyOptions
from reprodistill.methods.fm_kd import ProbedFMDistillation
from reprodistill.methods.probe_fit import TeacherHeadOptions


@dataclass
class KDOptions(ConsistencyOptions, TeacherHeadOptions):
    weight: float = 1.0
    temperature: float = 4.0


@register_method("kd")
class HintonKD(ProbedFMDistillation):
    Options = KDOptions
    loss_weights = ("weight", "consistency_weight")

    def distill_loss(self, s: dict[str, torch.Tensor], batch: Batch) -> dict[str, tuple[float, torch.Tensor]]:
        o = self.options
        return {"kd": (o.weight, kd_loss(s["logits"], self.teacher_logits(batch), o.temperature))}
