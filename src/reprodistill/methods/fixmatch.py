"""`fixmatch`: the student alone plus FixMatch's pseudo-labels on the unlabelled images (Sohn et al., NeurIPS 2020,
arXiv 2001.07685), no FM: the semi-supervised baseline a practitioner with unlabelled images would try first.

``L = CE(labelled weak views) + unlabelled_weight * mean_u[ 1(max p_w >= threshold) CE(strong view, argmax p_w) ]``
with the paper's defaults (threshold 0.95, weight 1, RandAugment with 2 random ops and Cutout of half the side).
The unlabelled images come from ``data.unlabelled``; without them it is the student alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from reprodistill.methods.base import Batch, Method, MethodContext, StepOutput, register_method
from reprodistill.methods.consistency import StrongViewConsistency


@dataclass
class FixMatchOptions:
    unlabelled_weight: float = 1.0
    threshold: float = 0.95
    n_ops: int = 2
    cutout: float = 0.5


@register_method("fixmatch")
class FixMatch(Method):
    uses_unlabelled = True  # CE skips unlabelled images; the pseudo-label term uses only them
    Options = FixMatchOptions
    loss_weights = ("unlabelled_weight",)

    def __init__(self, ctx: MethodContext, options: FixMatchOptions) -> None:
        super().__init__(ctx, options)
        self.consistency = StrongViewConsistency(options.threshold, ctx.cfg.train, options.n_ops, options.cutout)
        self.input_views = {"strong": self.consistency.view}

    def forward(self, batch: Batch) -> StepOutput:
        f_weak, f_strong = self.consistency.features(self.student, self.student_input(batch), batch)
        logits = self.student.head(f_weak)
        strong = None if f_strong is None else self.student.head(f_strong)
        unsup, mask_rate = self.consistency.loss(logits, strong, batch["label"])
        parts = {"ce": self.task_loss(logits, batch["label"]), "unlabelled": unsup}
        return StepOutput.weighted(
            logits, parts, {"unlabelled": self.options.unlabelled_weight}, logged={"mask_rate": mask_rate}
        )
