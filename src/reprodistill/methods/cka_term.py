"""The CKA alignment term's options, shared by every method that aligns FM and student representations with CKA
(``rd``, ``drd``): one definition, so a new kernel or estimator option reaches both."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from reprodistill.losses import cka_loss


@dataclass
class CKAOptions:
    """Options of the ``1 - CKA`` term."""

    cka_weight: float = 1.0
    cka_kernel: Literal["linear", "rbf"] = "linear"
    # RBF bandwidth as a fraction of the median pairwise distance (rbf kernel only)
    rbf_sigma: float = 0.8
    cka_unbiased: bool = False

    def cka_term(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``1 - CKA(x, y)`` with these options (unweighted)."""
        return cka_loss(x, y, self.cka_kernel, self.rbf_sigma, self.cka_unbiased)
