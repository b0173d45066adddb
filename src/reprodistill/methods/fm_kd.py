"""Shared base of the KD baselines: a student distilled from the *linearly probed* frozen FM.

Plain KD needs teacher logits for the target task, and a frozen FM has none; the usual baseline (and the one the
papers compare against) first fits a linear probe on the FM's features and distils from FM + probe. The probe here
is fitted once in :meth:`prepare`, full-batch L-BFGS on the standardised fixed-view train features with the run's
class weights and a small L2 penalty, from zeros: deterministic, so a resumed run refits the same probe. It is
then frozen; its test metrics are reported beside the student's (``extra.probed_fm``).

Subclasses implement :meth:`distill_loss`; the total loss is ``CE(student) + distill_loss``.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from reprodistill.methods.base import Batch, Method, MethodContext


class StandardisedLinear(nn.Module):
    """``Linear((x - mean) / std)`` with frozen statistics."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.linear = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear((x - self.mean) / self.std)


def fit_linear_probe(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    class_weights: Optional[torch.Tensor] = None,
    l2: float = 1e-3,
    steps: int = 100,
) -> StandardisedLinear:
    """Multinomial logistic regression on standardised features (full-batch L-BFGS, zero init), returned frozen."""
    x = features.float()
    probe = StandardisedLinear(x.shape[1], num_classes).to(x.device)
    probe.mean.copy_(x.mean(0))
    probe.std.copy_(x.std(0).clamp_min(1e-6))
    nn.init.zeros_(probe.linear.weight)
    nn.init.zeros_(probe.linear.bias)
    opt = torch.optim.LBFGS(probe.parameters(), lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")
    w = None if class_weights is None else class_weights.to(x.device)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(probe(x), labels, weight=w) + l2 * probe.linear.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return probe.requires_grad_(False).eval()


def split_teacher_features(
    split: Any, device: torch.device, batch_size: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """(fixed-view teacher features, labels) of a whole engine split: cached, or computed once with its online FM."""
    labels = torch.as_tensor(split.dataset.split.labels, dtype=torch.long, device=device)
    if split.teacher_features is not None:
        return split.teacher_features.float().to(device), labels
    if split.online_teacher is None:
        raise ValueError("this method needs teacher features, but the split carries neither a cache nor an FM")
    chunks = []
    for start in range(0, len(split.dataset), batch_size):
        images = torch.stack(
            [split.dataset[i]["image"] for i in range(start, min(start + batch_size, len(split.dataset)))]
        )
        chunks.append(split.online_teacher(images.to(device)).float())
    return torch.cat(chunks), labels


class ProbedFMDistillation(Method):
    """A student trained with ``CE + distill_loss(student, probed FM)``; only the student is deployed."""

    uses_teacher = True
    teacher_features = "pooled"

    def __init__(self, ctx: MethodContext, options: Any) -> None:
        super().__init__(ctx, options)
        self.probe = StandardisedLinear(ctx.teacher.feature_dim, ctx.num_classes).requires_grad_(False)

    def prepare(self, train: Any, device: torch.device) -> None:
        feats, labels = split_teacher_features(train, device)
        fitted = fit_linear_probe(self.pooled(feats), labels, self.num_classes, self.class_weights)
        self.probe.load_state_dict(fitted.state_dict())
        self.prepare_features(feats)

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
        """``{'features': [B,D], 'logits': [B,K]}``; subclasses that need inner maps override it."""
        f = self.student.features(self.student_input(batch))
        return {"features": f, "logits": self.student.head(f)}

    def distill_loss(self, s: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        """Named, already weighted distillation terms."""
        raise NotImplementedError

    def forward(self, batch: Batch) -> dict[str, Any]:
        s = self.student_outputs(batch)
        parts = {"ce": self.task_loss(s["logits"], batch["label"]), **self.distill_loss(s, batch)}
        loss = torch.stack(list(parts.values())).sum()
        return {"loss": loss, "logits": s["logits"], "parts": {k: v.detach() for k, v in parts.items()}}

    def extra_logits(self, batch: Batch) -> dict[str, torch.Tensor]:
        return {"probed_fm": self.teacher_logits(batch)}
