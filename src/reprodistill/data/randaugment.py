"""RandAugment + Cutout on whole uint8 batches, each image with its own ops and magnitudes (FixMatch's strong view).

FixMatch (Sohn et al., NeurIPS 2020, arXiv 2001.07685) draws for every unlabelled image ``n_ops`` operations from a
fixed pool with random magnitudes (its "RandAugment with random magnitude" variant), then applies Cutout. The ops and
ranges below are the paper's Table 12: brightness, colour, contrast and sharpness blend factors in [0.05, 0.95],
posterize to 4-8 bits, rotation up to 30 degrees, shear and translation up to 0.3, solarize threshold in [0, 1],
plus autocontrast, equalize and identity. Everything is vectorised over the images that drew the same op, so a batch
of 128 costs a few dozen tensor ops instead of 256 PIL calls; the draws come from one generator for the *global*
batch (as :func:`reprodistill.data.transforms.augment`), so a data-parallel slice gets what one process would give it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

_LUMA = torch.tensor([0.299, 0.587, 0.114])


def _gray(x: torch.Tensor) -> torch.Tensor:
    """[B,C,H,W] in [0,1] -> its luma, [B,1,H,W] (C=1: itself)."""
    if x.shape[1] == 1:
        return x
    return (x * _LUMA.to(x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)


def _blend(x: torch.Tensor, degenerate: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL ImageEnhance semantics: factor 1 is the image, 0 the degenerate image."""
    f = factor.view(-1, 1, 1, 1)
    return (degenerate + f * (x - degenerate)).clamp(0.0, 1.0)


def _signed(m: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    return torch.where(sign, m, -m)


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Per-image affine warp (output -> input coordinates in [-1, 1]); pixels from outside the image are black."""
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _rotate(x: torch.Tensor, m: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    a = _signed(m * math.radians(30.0), s)
    cos, sin, z = torch.cos(a), torch.sin(a), torch.zeros_like(a)
    return _affine(x, torch.stack([torch.stack([cos, -sin, z], 1), torch.stack([sin, cos, z], 1)], 1))


def _shear(axis: int) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    def op(x: torch.Tensor, m: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        k, one, z = _signed(m * 0.3, s), torch.ones_like(m), torch.zeros_like(m)
        rows = [[one, k, z], [z, one, z]] if axis == 0 else [[one, z, z], [k, one, z]]
        return _affine(x, torch.stack([torch.stack(r, 1) for r in rows], 1))

    return op


def _translate(axis: int) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    def op(x: torch.Tensor, m: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        t, one, z = _signed(m * 0.3 * 2.0, s), torch.ones_like(m), torch.zeros_like(m)  # [-1,1] spans 2 units
        rows = [[one, z, t], [z, one, z]] if axis == 0 else [[one, z, z], [z, one, t]]
        return _affine(x, torch.stack([torch.stack(r, 1) for r in rows], 1))

    return op


def _factor(m: torch.Tensor) -> torch.Tensor:
    return 0.05 + 0.9 * m


def _brightness(x: torch.Tensor, m: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return _blend(x, torch.zeros_like(x), _factor(m))


def _color(x: torch.Tensor, m: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return _blend(x, _gray(x).expand_as(x), _factor(m))  # a no-op on grayscale images, as in PIL


def _contrast(x: torch.Tensor, m: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    mean = _gray(x).mean((1, 2, 3), keepdim=True).expand_as(x)
    return _blend(x, mean, _factor(m))


def _sharpness(x: torch.Tensor, m: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    # PIL's SMOOTH kernel; the one-pixel border keeps the original pixels, as PIL does
    k = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]], device=x.device) / 13.0
    c = x.shape[1]
    smooth = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k.expand(c, 1, 3, 3), groups=c)
    smooth[..., 0, :], smooth[..., -1, :], smooth[..., :, 0], smooth[..., :, -1] = (
        x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1],
    )  # fmt: skip
    return _blend(x, smooth, _factor(m))


def _posterize(x: torch.Tensor, m: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    bits = (8 - torch.round(m * 4)).view(-1, 1, 1, 1)  # 4..8 bits kept
    step = torch.pow(2.0, 8 - bits)
    return torch.floor(torch.round(x * 255.0) / step) * step / 255.0


def _solarize(x: torch.Tensor, m: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    thr = m.view(-1, 1, 1, 1)
    return torch.where(x >= thr, 1.0 - x, x)


def _autocontrast(x: torch.Tensor, m: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    lo, hi = x.amin((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
    scaled = (x - lo) / (hi - lo).clamp_min(1e-6)
    return torch.where(hi > lo, scaled, x)


def _equalize(x: torch.Tensor, m: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Per-image, per-channel histogram equalisation (PIL's ImageOps.equalize on 256 bins)."""
    b, c, h, w = x.shape
    v = torch.round(x * 255.0).long().view(b * c, h * w)
    hist = torch.zeros(b * c, 256, device=x.device).scatter_add_(1, v, torch.ones_like(v, dtype=torch.float32))
    # PIL: step = (pixels - count of the last non-empty bin) // 255; lut[i] = (cumsum before i + step // 2) // step
    last = hist.gather(1, (hist > 0).long().cumsum(1).argmax(1, keepdim=True))
    step = torch.div(h * w - last, 255, rounding_mode="floor")
    before = torch.cumsum(hist, 1) - hist
    lut = torch.div(before + torch.div(step, 2, rounding_mode="floor"), step.clamp_min(1), rounding_mode="floor")
    out = lut.clamp(0, 255).gather(1, v) / 255.0
    return torch.where(step.view(-1, 1) > 0, out, v.float() / 255.0).view(b, c, h, w)


def _identity(x: torch.Tensor, m: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return x


# name -> op(images [n,C,H,W] in [0,1], magnitude [n] in [0,1], sign [n] bool)
OPS: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "autocontrast": _autocontrast,
    "brightness": _brightness,
    "color": _color,
    "contrast": _contrast,
    "equalize": _equalize,
    "identity": _identity,
    "posterize": _posterize,
    "rotate": _rotate,
    "sharpness": _sharpness,
    "shear_x": _shear(0),
    "shear_y": _shear(1),
    "solarize": _solarize,
    "translate_x": _translate(0),
    "translate_y": _translate(1),
}


def cutout(x: torch.Tensor, size: float, cy: torch.Tensor, cx: torch.Tensor, fill: float = 0.5) -> torch.Tensor:
    """A square of side ``round(size * H)`` centred at pixel (cy, cx) of each image set to ``fill`` (clipped at
    the border, as FixMatch's CutoutAbs)."""
    b, _, h, w = x.shape
    side = int(round(size * min(h, w)))
    if side <= 0:
        return x
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    y0, x0 = (cy - side // 2).view(-1, 1, 1), (cx - side // 2).view(-1, 1, 1)
    inside = (ys >= y0) & (ys < y0 + side) & (xs >= x0) & (xs < x0 + side)
    return torch.where(inside.unsqueeze(1), torch.full_like(x, fill), x)


@dataclass
class RandAugmentDraw:
    """The random choices of :func:`rand_augment` for n images: ops [n, n_ops], their magnitudes and signs, and
    the Cutout centres; drawn once, they can be applied again (a cached strong view)."""

    choice: torch.Tensor
    mag: torch.Tensor
    sign: torch.Tensor
    cy: torch.Tensor
    cx: torch.Tensor

    def rows(self, index: torch.Tensor | slice) -> "RandAugmentDraw":
        return RandAugmentDraw(self.choice[index], self.mag[index], self.sign[index], self.cy[index], self.cx[index])


def draw_rand_augment(
    n: int, n_ops: int, size: tuple[int, int], generator: torch.Generator | None = None
) -> RandAugmentDraw:
    """The choices of :func:`rand_augment` for ``n`` images of ``size`` (h, w), in its order of draws."""
    choice = torch.randint(0, len(OPS), (n, n_ops), generator=generator)
    mag = torch.rand(n, n_ops, generator=generator)
    sign = torch.rand(n, n_ops, generator=generator) < 0.5
    cy = torch.randint(0, size[0], (n,), generator=generator)
    cx = torch.randint(0, size[1], (n,), generator=generator)
    return RandAugmentDraw(choice, mag, sign, cy, cx)


def apply_rand_augment(images: torch.Tensor, draw: RandAugmentDraw, cutout_size: float = 0.5) -> torch.Tensor:
    """A uint8 [B,C,H,W] batch under the drawn ops (row i: ``draw`` row i) and Cutout; uint8 out."""
    names = list(OPS)
    x = images.float().div(255.0)
    for j in range(draw.choice.shape[1]):
        for k in draw.choice[:, j].unique().tolist():
            rows = draw.choice[:, j] == k
            x[rows] = OPS[names[k]](x[rows], draw.mag[rows, j].to(x.device), draw.sign[rows, j].to(x.device))
    x = cutout(x, cutout_size, draw.cy.to(x.device), draw.cx.to(x.device))
    return torch.round(x.clamp(0.0, 1.0) * 255.0).to(torch.uint8)


def rand_augment(
    images: torch.Tensor,
    n_ops: int = 2,
    cutout_size: float = 0.5,
    generator: torch.Generator | None = None,
    offset: int = 0,
    total: int | None = None,
) -> torch.Tensor:
    """FixMatch's strong augmentation of a uint8 [B,C,H,W] batch: ``n_ops`` random ops of :data:`OPS` per image with
    random magnitudes, then Cutout of side ``cutout_size`` (a fraction of the image side). uint8 out.

    Draws are made for ``total`` images (default B) and rows ``offset:offset+B`` are used."""
    b, _, h, w = images.shape
    draw = draw_rand_augment(total or b, n_ops, (h, w), generator).rows(slice(offset, offset + b))
    return apply_rand_augment(images, draw, cutout_size)
