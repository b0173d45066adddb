"""Visual prompts: learnable input transformations in the FM's own [0,1] pixel space (model reprogramming).

- ``padding``: the image is resized to ``S - 2p`` and framed by a learnable border of width p:
  ``x' = pad(resize(x)) + tanh(W) * M`` with M = 1 on the frame only (ILM-VP / TDMR style).
- ``additive``: ``x' = resize(x) + eps * tanh(W)`` over the whole image.

``learnable_resize`` (padding only) makes the image's share of the canvas a parameter: the image is placed by a
differentiable affine resampling at scale ``s`` (starting at ``(S - 2p) / S``, kept in [0.25, 1]) and the prompt
fills the soft complement of where the image lands, so the task loss also chooses how large the FM sees the image.

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

    mask: torch.Tensor  # a buffer

    def __init__(
        self,
        spec: InputSpec,
        kind: Literal["padding", "additive"] = "padding",
        pad: Optional[int] = None,
        eps: float = 0.1,
        learnable_resize: bool = False,
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
        self.scale_logit: Optional[nn.Parameter] = None
        if learnable_resize:
            if kind != "padding":
                raise ConfigError(
                    "learnable_resize needs prompt kind 'padding' (the prompt fills the rest of the canvas)"
                )
            s0 = (min(self.inner) / min(h, w) - self.MIN_SCALE) / (1 - self.MIN_SCALE)
            self.scale_logit = nn.Parameter(torch.logit(torch.tensor(s0)))

    MIN_SCALE = 0.25

    @property
    def scale(self) -> torch.Tensor:
        """The image's share of the canvas side, in [MIN_SCALE, 1] (learnable resize only)."""
        assert self.scale_logit is not None, "learnable_resize is off: the image keeps its size"
        return self.MIN_SCALE + (1 - self.MIN_SCALE) * torch.sigmoid(self.scale_logit)

    def _place(self, images: torch.Tensor) -> torch.Tensor:
        """Image resampled into the centre of the canvas at the learnable scale; plus prompt on the soft rest."""
        x = to_unit(images, self.spec.channels, self.spec.size, self.spec.interpolation)
        b = x.shape[0]
        theta = torch.zeros(b, 2, 3, device=x.device)
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / self.scale
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        placed = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        inside = F.grid_sample(torch.ones_like(x[:1, :1]), grid[:1], mode="bilinear", padding_mode="zeros",
                               align_corners=False)  # fmt: skip
        return placed + torch.tanh(self.weight) * (1 - inside)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.scale_logit is not None:
            return normalize(self._place(images), self.spec)
        x = to_unit(images, self.spec.channels, self.inner, self.spec.interpolation)
        if self.kind == "padding":
            x = F.pad(x, (self.pad, self.pad, self.pad, self.pad)) + torch.tanh(self.weight) * self.mask
        else:
            x = x + self.eps * torch.tanh(self.weight)
        return normalize(x, self.spec)
