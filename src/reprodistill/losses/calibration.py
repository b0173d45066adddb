"""Temperature calibration of a teacher's logits on labelled held-out images (Guo et al., ICML 2017)."""

from __future__ import annotations

from typing import Optional

import torch


def fit_logit_scale(
    logits: torch.Tensor, labels: torch.Tensor, weight: Optional[torch.Tensor] = None, max_scale: float = 1.0
) -> float:
    """The scale s in (0, max_scale] minimising the (class-weighted) cross-entropy of ``s * logits`` (s = 1/T).

    The loss is convex in s (log-sum-exp of a linear function minus a linear function), so its derivative
    E_softmax(s z)[z] - z_y is increasing and bisection finds the minimum. ``max_scale`` 1 only ever softens: a
    teacher that separates the images perfectly would otherwise be sharpened without bound.
    """
    z = logits.detach().double()
    y = labels.to(z.device)
    w = torch.ones(len(y), dtype=z.dtype, device=z.device) if weight is None else weight.double().to(z.device)[y]

    def slope(s: float) -> float:
        p = torch.softmax(s * z, -1)
        return float((w * ((p * z).sum(-1) - z.gather(1, y[:, None]).squeeze(1))).sum())

    if slope(max_scale) <= 0:  # still improving at the cap
        return max_scale
    lo, hi = 0.0, max_scale
    for _ in range(60):  # 2^-60 of the interval: exact to float precision
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if slope(mid) < 0 else (lo, mid)
    return max(hi, 1e-6)


def scaled_nll(
    logits: torch.Tensor, labels: torch.Tensor, scale: float = 1.0, weight: Optional[torch.Tensor] = None
) -> float:
    """(Class-weighted) cross-entropy of ``scale * logits``; log-probabilities work as logits (a per-row shift)."""
    w = None if weight is None else weight.double().to(logits.device)
    return float(torch.nn.functional.cross_entropy(scale * logits.double(), labels.to(logits.device), weight=w))
