"""`student`: the small model trained alone on the labels (from scratch, or from ImageNet with student.pretrained)."""

from __future__ import annotations

from reprodistill.methods.base import Batch, Method, StepOutput, register_method


@register_method("student")
class StudentAlone(Method):
    """Baseline every transfer method must beat: cross-entropy on the student's own logits."""

    def forward(self, batch: Batch) -> StepOutput:
        logits = self.student(self.student_input(batch))
        ce = self.task_loss(logits, batch["label"])
        return StepOutput(ce, logits, {"ce": ce})
