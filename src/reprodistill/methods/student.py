"""`student`: the small model trained alone on the labels (from scratch, or from ImageNet with student.pretrained)."""

from __future__ import annotations

from typing import Any

from reprodistill.methods.base import Batch, Method, register_method


@register_method("student")
class StudentAlone(Method):
    """Baseline every transfer method must beat: cross-entropy on the student's own logits."""

    def forward(self, batch: Batch) -> dict[str, Any]:
        logits = self.student(self.student_input(batch))
        ce = self.task_loss(logits, batch["label"])
        return {"loss": ce, "logits": logits, "parts": {"ce": ce.detach()}}
