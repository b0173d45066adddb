"""Heads on frozen FM features that standardise with fixed train-set statistics, and the one linear-probe fitter.

Raw FM feature channels differ in scale by orders of magnitude, so every trainable head on them standardises its
input first. A BatchNorm does that in training mode with batch statistics, but in eval mode with *running*
statistics that start at mean 0 / var 1 and see only as many updates as there are steps: at 10% data (a handful of
steps per epoch) eval-mode inputs land far from what the head was trained on, and test predictions collapse to
one class while the train loss looks fine. Fixed buffers computed once over the cached train features are exact
from the first step and identical in training and eval mode.
"""

from __future__ import annotations

import logging
import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger("reprodistill")

# L2 penalties tried by the probe fitter (per weight, on standardised features); the validation split picks one.
PROBE_L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)
# Used when there is no validation split to choose from (the value the KD teachers' probe always used).
PROBE_DEFAULT_L2 = 1e-3


class Standardise(nn.Module):
    """``(x - mean) / std`` per channel with frozen statistics (buffers, so they are checkpointed and exported)."""

    mean: torch.Tensor  # a buffer
    std: torch.Tensor  # a buffer

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def fit(self, features: torch.Tensor) -> "Standardise":
        """Set the statistics from [N, dim] features (e.g. the cached train features); returns self."""
        x = features.float()
        self.mean.copy_(x.mean(0))
        self.std.copy_(x.std(0).clamp_min(1e-6) if len(x) > 1 else torch.ones_like(self.std))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class StandardisedLinear(nn.Module):
    """``Linear((x - mean) / std)`` with frozen statistics."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.norm = Standardise(dim)
        self.linear = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(x))


def batchnorm_head(dim: int, out: int) -> nn.Sequential:
    """``Linear(BatchNorm1d(x))`` (no affine) for heads on features that change while training (an FM adapted by
    LoRA / prompts), where fixed statistics would go stale; batch statistics in training, running ones in eval."""
    return nn.Sequential(nn.BatchNorm1d(dim, affine=False), nn.Linear(dim, out))


def _lbfgs(
    probe: StandardisedLinear, x: torch.Tensor, y: torch.Tensor, w: Optional[torch.Tensor], l2: float, steps: int
) -> None:
    nn.init.zeros_(probe.linear.weight)
    nn.init.zeros_(probe.linear.bias)
    opt = torch.optim.LBFGS(
        probe.linear.parameters(), lr=1.0, max_iter=steps, tolerance_grad=1e-7, line_search_fn="strong_wolfe"
    )
    z = probe.norm(x)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = _cross_entropy(probe.linear(z), y, w) + l2 * probe.linear.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)


def _cross_entropy(logits: torch.Tensor, y: torch.Tensor, w: Optional[torch.Tensor]) -> torch.Tensor:
    """Class-weighted cross-entropy of labels [N], or of class distributions [N, K] (soft targets, e.g. propagated
    labels), normalised like the hard-label one: by the summed weight of the targets (so one-hot rows give the
    same value as their labels)."""
    if y.ndim == 1:
        return F.cross_entropy(logits, y, weight=w)
    mass = y if w is None else y * w
    return -(mass * logits.log_softmax(-1)).sum() / mass.sum()


def fit_linear_probe(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    class_weights: Optional[torch.Tensor] = None,
    l2: float | Sequence[float] = PROBE_L2_GRID,
    steps: int = 500,
    val: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
) -> StandardisedLinear:
    """Multinomial logistic regression on standardised features (full-batch L-BFGS to convergence, zero init);
    ``labels`` are class indices [N] or class distributions [N, K].

    Deterministic (no random init, no minibatches), so a resumed run refits the same probe. With several ``l2``
    values and ``val`` = (features, labels), the one with the lowest (class-weighted) validation cross-entropy is
    kept; without ``val`` a grid falls back to ``PROBE_DEFAULT_L2``. Returned frozen, in eval mode.
    """
    x = features.float()
    probe = StandardisedLinear(x.shape[1], num_classes).to(x.device)
    probe.norm.fit(x)
    w = None if class_weights is None else class_weights.to(x.device)
    grid = [l2] if isinstance(l2, (int, float)) else list(l2)
    if val is None or len(grid) == 1:
        _lbfgs(probe, x, labels, w, float(grid[0]) if len(grid) == 1 else PROBE_DEFAULT_L2, steps)
        return probe.requires_grad_(False).eval()
    xv, yv = val[0].float().to(x.device), val[1].to(x.device)
    best: tuple[float, float, dict[str, torch.Tensor]] = (math.inf, float(grid[0]), {})
    for value in grid:
        _lbfgs(probe, x, labels, w, float(value), steps)
        with torch.no_grad():
            loss = float(F.cross_entropy(probe(xv), yv, weight=w))
        if loss < best[0]:
            best = (loss, float(value), {k: v.clone() for k, v in probe.state_dict().items()})
    probe.load_state_dict(best[2])
    log.info("linear probe: L2 %.0e chosen on validation (val CE %.4f; tried %s)", best[1], best[0], grid)
    if len(grid) > 2 and best[1] in (min(grid), max(grid)):
        log.warning("linear probe: the chosen L2 %.0e is at the edge of the grid; a wider grid may fit better", best[1])
    return probe.requires_grad_(False).eval()
