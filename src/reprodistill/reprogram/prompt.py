"""Visual prompts: learnable input transformations in the FM's own [0,1] pixel space (model reprogramming).

- ``padding``: the image is resized to ``S - 2p`` and framed by a learnable border of width p:
  ``x' = pad(resize(x)) + tanh(W) * M`` with M = 1 on the frame only (ILM-VP / TDMR style).
- ``additive``: ``x' = resize(x) + eps * tanh(W)`` over the whole image.

W starts at zero, so the prompted FM starts as the plain FM on the (framed) image. The result is normalised with
the FM's mean/std, so the FM sees inputs of its usual statistics.
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import nn

from reprodistill.data.transforms import InputSpec, normalize, to_unit
from reprodistill.errors import ConfigError


class VisualPrompt(nn.Module):
    """uint8 images -> the FM's normalised input with a learnable prompt applied."""

    def __init__(
        self,
        spec: InputSpec,
        kind: Literal["padding", "additive"] = "padding",
        pad: Optional[int] = None,
        eps: float = 0.1,
    ) -> None:
        super().__init__()
        h, w = spec.size
        self.spec, self.kind, self.eps = spec, kind, eps
        self.pad = max(1, min(h, w) // 7) if pad is None else pad  # 16 px at 112, 32 px at 224 (ILM-VP)
        if kind == "padding":
            if not 0 < self.pad < min(h, w) // 2:
                raise ConfigError(f"prompt pad={self.pad} must be between 1 and {min(h, w) // 2 - 1} for {h}x{w} input")
            mask = torch.ones(1, 1, h, w)
            mask[..., self.pad : h - self.pad, self.pad : w - self.pad] = 0
            self.inner = (h - 2 * self.pad, w - 2 * self.pad)
        elif kind == "additive":
            mask = torch.ones(1, 1, h, w)
            self.inner = (h, w)
        else:
            raise ConfigError(f"prompt kind {kind!r}: use 'padding' or 'additive'")
        self.register_buffer("mask", mask)
        self.weight = nn.Parameter(torch.zeros(1, spec.channels, h, w))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = to_unit(images, self.spec.channels, self.inner, self.spec.interpolation)
        if self.kind == "padding":
            x = F.pad(x, (self.pad, self.pad, self.pad, self.pad)) + torch.tanh(self.weight) * self.mask
        else:
            x = x + self.eps * torch.tanh(self.weight)
        return normalize(x, self.spec)
