"""`linear_probe`: a linear classifier on frozen, pooled foundation-model features (PEFT baseline).

The probe is solved, not trained on the epoch or step budget: multinomial logistic regression on the cached
fixed-view train features, standardised with their exact statistics, full-batch L-BFGS to convergence with the
run's class weights, and the L2 penalty chosen on the validation split
(:func:`~reprodistill.reprogram.probe.fit_linear_probe`, the same fitter as the KD baselines' teacher probe). A
baseline trained with SGD on a BatchNorm's running statistics is weaker than this for reasons that have nothing to
do with the FM, and every "beats the probe" claim would be void against it. With ``data.unlabelled``,
``teacher_head`` learns the head from the unlabelled images' features too (methods/probe_fit.py).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from reprodistill.data.transforms import InputSpec
from reprodistill.features.split import FeatureSplit
from reprodistill.methods.base import Batch, Method, MethodContext, StepOutput, register_method
from reprodistill.methods.probe_fit import TeacherHeadOptions, fit_probe
from reprodistill.reprogram.probe import StandardisedLinear


@register_method("linear_probe")
class LinearProbe(Method):
    """``Linear((f_t - mean) / std)`` on cached pooled teacher features, fitted once in :meth:`prepare`."""

    uses_student = False
    uses_teacher = True
    teacher_features = "pooled"
    loop_training = False
    uses_unlabelled = True  # read by the teacher_head option only; the probe's own fit skips them
    Options = TeacherHeadOptions

    def __init__(self, ctx: MethodContext, options: Any) -> None:
        super().__init__(ctx, options)
        self.head = StandardisedLinear(self.teacher.feature_dim, ctx.num_classes)

    def prepare(self, train: FeatureSplit, device: torch.device, val: Optional[FeatureSplit] = None) -> None:
        fit_probe(self, self.head, train, val, device)

    def forward(self, batch: Batch) -> StepOutput:
        logits = self.head(batch["teacher_features"])
        ce = self.task_loss(logits, batch["label"])
        return StepOutput(ce, logits, {"ce": ce})

    def deployed(self) -> nn.Module:
        return nn.Sequential(self.teacher, self.head)  # the whole FM ships with the probe

    def deployed_spec(self) -> InputSpec:
        return self.teacher.spec
