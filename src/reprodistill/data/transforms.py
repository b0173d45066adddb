"""Batched, per-model preprocessing and augmentation of uint8 image batches.

Teacher and student each carry an :class:`InputSpec` (size, channels, value range, mean/std), so the same uint8
batch is turned into the input each network expects. Working on whole batches keeps the CPU cost low.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from reprodistill.data.randaugment import rand_augment


@dataclass(frozen=True)
class InputSpec:
    """What a network wants as input.

    Attributes:
        size: (H, W) after resizing.
        channels: 1 or 3; grayscale is repeated to RGB and RGB averaged (luma) to grayscale.
        mean: Per-channel mean subtracted after scaling pixels to [0, 1].
        std: Per-channel std divided by.
        interpolation: 'bilinear' or 'bicubic'.
    """

    size: tuple[int, int]
    channels: int = 3
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    interpolation: str = "bilinear"

    def describe(self) -> dict:
        return {
            "size": list(self.size),
            "channels": self.channels,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
        }


_LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


def to_unit(
    images: torch.Tensor, channels: int, size: tuple[int, int], interpolation: str = "bilinear"
) -> torch.Tensor:
    """uint8 [B,C,H,W] -> float in [0,1] with ``channels`` channels at ``size`` (before any normalisation)."""
    x = images.float().div_(255.0)
    if x.shape[1] != channels:
        if channels == 3 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif channels == 1 and x.shape[1] == 3:
            x = (x * _LUMA.to(x.device)).sum(1, keepdim=True)
        else:
            raise ValueError(f"cannot convert {x.shape[1]} channels to {channels}")
    if tuple(x.shape[-2:]) != tuple(size):
        align = False if interpolation in ("bilinear", "bicubic") else None
        x = F.interpolate(x, size=size, mode=interpolation, align_corners=align, antialias=True)
        if interpolation == "bicubic":
            x = x.clamp_(0.0, 1.0)
    return x


def normalize(x: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """[0,1] pixels -> ``(x - mean) / std`` of ``spec``."""
    mean = torch.tensor(spec.mean[: spec.channels], device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(spec.std[: spec.channels], device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


def preprocess(images: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """uint8 [B,C,H,W] -> float [B,spec.channels,*spec.size], scaled to [0,1] then normalised by mean/std."""
    return normalize(to_unit(images, spec.channels, spec.size, spec.interpolation), spec)


def draw_augment(
    n: int, shift: int, flip: bool, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random augmentation parameters of ``n`` images: (dy, dx) crop offsets in [0, 2*shift], flip mask."""
    centre = torch.full((n,), max(shift, 0), dtype=torch.long)
    dy = torch.randint(0, 2 * shift + 1, (n,), generator=generator) if shift > 0 else centre
    dx = torch.randint(0, 2 * shift + 1, (n,), generator=generator) if shift > 0 else centre
    mask = torch.rand(n, generator=generator) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    return dy, dx, mask


def apply_augment(
    images: torch.Tensor, shift: int, dy: torch.Tensor, dx: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Shift each image by (dy - shift, dx - shift) pixels (edge-replicated), then flip where ``mask``."""
    b, _, h, w = images.shape
    out = images
    if shift > 0:
        padded = F.pad(images.float(), (shift, shift, shift, shift), mode="replicate").to(images.dtype)
        out = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(b)])
    if bool(mask.any()):
        out = torch.where(mask.view(b, 1, 1, 1), out.flip(-1), out)
    return out


def augment(
    images: torch.Tensor,
    shift: int,
    flip: bool,
    generator: torch.Generator | None = None,
    offset: int = 0,
    total: int | None = None,
) -> torch.Tensor:
    """Random translation by up to ``shift`` pixels (edge-replicated) and optional horizontal flip, per image.

    With ``total``, the random draws are made for a global batch of ``total`` images and rows ``offset:offset+B``
    are used: the slice of one process in data-parallel training gets what a single process would have given it.
    """
    if shift <= 0 and not flip:
        return images
    b = len(images)
    dy, dx, mask = draw_augment(total or b, shift, flip, generator)
    rows = slice(offset, offset + b)
    return apply_augment(images, max(shift, 0), dy[rows], dx[rows], mask[rows])


@dataclass(frozen=True)
class ExtraView:
    """Another augmented view of every training image that a method asks for (semi-supervised consistency): the
    loop puts it in ``batch['image_<name>']`` beside the usual (weak) view ``batch['image']``.

    Attributes:
        strong: False: another draw of the weak shift / flip (Mean Teacher's second view); True: the weak
            augmentation followed by RandAugment and Cutout (FixMatch's strong view, :mod:`.randaugment`).
        shift: Random translation in pixels (the run's ``train.augment_shift``).
        flip: Random horizontal flip (``train.augment_flip``).
        n_ops: RandAugment ops per image (strong only).
        cutout: Cutout side as a fraction of the image side (strong only; 0: none).
    """

    strong: bool
    shift: int
    flip: bool
    n_ops: int = 2
    cutout: float = 0.5

    def __call__(
        self, images: torch.Tensor, generator: torch.Generator, offset: int = 0, total: int | None = None
    ) -> torch.Tensor:
        """The view of a uint8 [B,C,H,W] batch of raw (un-augmented) images, uint8 out; global-batch draws as
        :func:`augment`."""
        x = augment(images, self.shift, self.flip, generator, offset, total)
        return rand_augment(x, self.n_ops, self.cutout, generator, offset, total) if self.strong else x
