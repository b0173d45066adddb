"""Feature-space reprogramming (RD's phi): trainable residual blocks that map frozen FM features into a task-relevant
space of the student's feature size, so one classifier can serve both."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from reprodistill.reprogram.probe import Standardise


class ResidualMLP(nn.Module):
    """``y = shortcut(x) + W2 act(norm(W1 x))``; the shortcut is a linear projection when dims differ."""

    def __init__(self, d_in: int, d_out: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.shortcut = nn.Identity() if d_in == d_out else nn.Linear(d_in, d_out, bias=False)
        self.body = nn.Sequential(
            nn.Linear(d_in, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, d_out)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.body(x)


class FeatureReprogrammer(nn.Module):
    """phi: pooled FM features [B, d_t] -> task space [B, d_s].

    The input is standardised per channel (FM feature channels differ in scale by orders of magnitude) with fixed
    statistics that the method sets once from the train features (:meth:`fit_statistics`), then passes ``blocks``
    residual MLP blocks, the first one changing d_t -> d_s. Not a BatchNorm: its running statistics see one update
    per step, which at low data leaves eval-mode inputs far from the training ones (see ``reprogram/probe.py``).

    Args:
        d_teacher: FM feature size d_t.
        d_student: Student feature size d_s.
        hidden: Width of the residual MLPs (default d_s).
        blocks: Number of residual blocks (>= 1).
    """

    def __init__(
        self,
        d_teacher: int,
        d_student: int,
        hidden: Optional[int] = None,
        blocks: int = 1,
        dropout: float = 0.0,
        input_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if blocks < 1:
            raise ValueError("phi needs at least one residual block")
        hidden = hidden or d_student
        self.norm = Standardise(d_teacher)
        # dropout on the standardised FM features: a few hundred images cannot pin down a 2048 -> d_s map
        self.input_dropout = nn.Dropout(input_dropout)
        self.blocks = nn.Sequential(
            ResidualMLP(d_teacher, d_student, hidden, dropout),
            *[ResidualMLP(d_student, d_student, hidden, dropout) for _ in range(blocks - 1)],
        )

    def fit_statistics(self, train_features: torch.Tensor) -> None:
        """Standardise with the mean / std of the [N, d_t] train features from now on."""
        self.norm.fit(train_features)

    def forward(self, f_t: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.input_dropout(self.norm(f_t)))
