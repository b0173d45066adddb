"""Shared base of the KD baselines: a student distilled from the *linearly probed* frozen FM.

Plain KD needs teacher logits for the target task, and a frozen FM has none; the usual baseline (and the one the
papers compare against) first fits a linear probe on the FM's features and distils from FM + probe. The probe here
is fitted once in :meth:`prepare` by :func:`~reprodistill.reprogram.probe.fit_linear_probe` (full-batch L-BFGS on the
standardised fixed-view train features with the run's class weights, L2 chosen on validation, from zeros:
deterministic, so a resumed run refits the same probe), the same fitter as the ``linear_probe`` baseline. It is then
frozen; its test metrics are reported beside the student's (``extra.probed_fm``).

Subclasses implement :meth:`distill_loss`; the total loss is ``CE(student) + distill_loss``, plus FixMatch's
pseudo-label term when the options inherit :class:`~reprodistill.methods.consistency.ConsistencyOptions` and switch it
on (``consistency_weight > 0``).
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from reprodistill.features.split import FeatureSplit
from reprodistill.methods.base import Batch, Method, MethodContext, StepOutput
from reprodistill.methods.consistency import optional_consistency, student_features
from reprodistill.methods.probe_fit import fit_probe
from reprodistill.reprogram.probe import StandardisedLinear


class ProbedFMDistillation(Method):
    """A student trained with ``CE + distill_loss(student, probed FM)``; only the student is deployed."""

    family = "kd"

    uses_teacher = True
    teacher_features = "pooled"
    uses_unlabelled = True  # CE skips unlabelled images; a distillation term that reads labels must opt out

    def __init__(self, ctx: MethodContext, options: Any) -> None:
        super().__init__(ctx, options)
        # map-fed subclasses probe the pooled last map (pool_layers apply to cached pooled vectors only)
        dim = self.teacher.feature_dim if self.teacher_features == "pooled" else self.teacher.map_pooled_dim
        self.probe = StandardisedLinear(dim, ctx.num_classes).requires_grad_(False)
        self.consistency = optional_consistency(options, ctx.cfg.train)
        if self.consistency is not None:
            self.input_views = {"strong": self.consistency.view}

    def prepare(self, train: FeatureSplit, device: torch.device, val: Optional[FeatureSplit] = None) -> None:
        self.prepare_features(fit_probe(self, self.probe, train, val, device, self.pooled))

    def prepare_features(self, train_features: torch.Tensor) -> None:
        """Hook for statistics of the train features (e.g. FitNet's target standardisation)."""

    def train(self, mode: bool = True) -> "ProbedFMDistillation":
        super().train(mode)
        self.probe.eval()  # frozen teacher head
        return self

    def pooled(self, teacher_features: torch.Tensor) -> torch.Tensor:
        """Pooled teacher features whether the batch carries vectors or maps."""
        f = teacher_features
        return f if f.ndim == 2 else self.teacher.pool(f)

    def teacher_logits(self, batch: Batch) -> torch.Tensor:
        with torch.no_grad():
            return self.probe(self.pooled(batch["teacher_features"]))

    def student_outputs(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``{'features': [B,D], 'logits': [B,K]}`` (and ``'strong_logits'`` of the unlabelled images' strong views
        with the consistency term); subclasses that need inner maps override it."""
        f, f_strong = student_features(self.consistency, self.student, self.student_input(batch), batch)
        out = {"features": f, "logits": self.student.head(f)}
        if f_strong is not None:
            out["strong_logits"] = self.student.head(f_strong)
        return out

    def distill_loss(self, s: dict[str, torch.Tensor], batch: Batch) -> dict[str, tuple[float, torch.Tensor]]:
        """Named distillation terms as (weight, unweighted term)."""
        raise NotImplementedError

    def forward(self, batch: Batch) -> StepOutput:
        s = self.student_outputs(batch)
        ce = self.task_loss(s["logits"], batch["label"])
        terms = self.distill_loss(s, batch)
        logged = {}
        if self.consistency is not None:
            unsup, logged["mask_rate"] = self.consistency.loss(s["logits"], s.get("strong_logits"), batch["label"])
            terms["consistency"] = (self.options.consistency_weight, unsup)
        loss = torch.stack([ce, *(w * t for w, t in terms.values())]).sum()
        parts = {"ce": ce, **{k: t for k, (_, t) in terms.items()}}
        return StepOutput(loss, s["logits"], parts, {k: w for k, (w, _) in terms.items()}, logged)

    def extra_logits(self, batch: Batch) -> dict[str, torch.Tensor]:
        return {"probed_fm": self.teacher_logits(batch)}
