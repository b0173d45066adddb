"""`linear_probe`: a linear classifier on frozen, pooled foundation-model features (PEFT baseline).

Features are standardised by a BatchNorm without affine parameters before the linear layer, as in the MAE linear
probe: raw FM features have wildly different scales per channel, which slows a plain linear layer down a lot.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from reprodistill.data.transforms import InputSpec
from reprodistill.methods.base import Batch, Method, MethodContext, register_method


@register_method("linear_probe")
class LinearProbe(Method):
    """Trains only ``BN(affine=False) -> Linear(d_t, K)`` on cached pooled teacher features."""

    uses_student = False
    uses_teacher = True
    teacher_features = "pooled"

    def __init__(self, ctx: MethodContext, options: Any) -> None:
        super().__init__(ctx, options)
        d = ctx.teacher.feature_dim
        self.head = nn.Sequential(nn.BatchNorm1d(d, affine=False), nn.Linear(d, ctx.num_classes))

    def forward(self, batch: Batch) -> dict[str, Any]:
        logits = self.head(batch["teacher_features"])
        ce = self.task_loss(logits, batch["label"])
        return {"loss": ce, "logits": logits, "parts": {"ce": ce.detach()}}

    def deployed(self) -> nn.Module:
        return nn.Sequential(self.teacher, self.head)  # the whole FM ships with the probe

    def deployed_spec(self) -> InputSpec:
        return self.teacher.spec
