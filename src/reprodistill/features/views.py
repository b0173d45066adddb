"""K pre-computed augmented views per training image, so augmentation and the teacher-feature cache coexist.

View 0 is the fixed (un-augmented) view; view k >= 1 shifts/flips every image (and with ``teacher.view_augment=
strong`` applies RandAugment and Cutout after it) with parameters drawn from generators seeded by k, so the views
are the same in every run and can be cached. During training each image of a batch picks one of its K views at
random: the student sees exactly that augmented image and the method reads the FM features of that same view (the
teacher scores the view the student sees: consistent teaching, Beyer et al. 2022). The student's usual on-the-fly
augmentation is replaced by this draw.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sized, cast

import torch
from torch.utils.data import Dataset

from reprodistill.data.randaugment import RandAugmentDraw, apply_rand_augment, draw_rand_augment
from reprodistill.data.transforms import apply_augment, draw_augment


@dataclass(frozen=True)
class ViewAugment:
    """How views k >= 1 are made: the weak shift / flip of ``train.augment_*``, and with ``strong`` RandAugment and
    Cutout after it (``teacher.view_augment=strong``: FixMatch's strong view, fixed per view and image so that the
    FM's features of it can be cached)."""

    shift: int
    flip: bool
    strong: bool = False
    n_ops: int = 2
    cutout: float = 0.5


@dataclass
class ViewParams:
    """The augmentation of one view for n images: shift offsets, flip mask, and the RandAugment draw if strong."""

    dy: torch.Tensor
    dx: torch.Tensor
    mask: torch.Tensor
    strong: Optional[RandAugmentDraw] = None

    def rows(self, index: torch.Tensor) -> ViewParams:
        return ViewParams(self.dy[index], self.dx[index], self.mask[index],
                          None if self.strong is None else self.strong.rows(index))  # fmt: skip


def view_params(n: int, k: int, shift: int, flip: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dy, dx, flip) of view ``k`` for ``n`` images; view 0 is the identity."""
    if k == 0:  # centred crop, no flip
        centre = torch.full((n,), max(shift, 0), dtype=torch.long)
        return centre, centre.clone(), torch.zeros(n, dtype=torch.bool)
    return draw_augment(n, shift, flip, torch.Generator().manual_seed(1_000 + k))


def draw_view(n: int, k: int, how: ViewAugment, size: tuple[int, int]) -> ViewParams:
    """View ``k``'s augmentation of ``n`` images of ``size`` (h, w), the same in every run (seeded by k); view 0 is
    the fixed view, never augmented."""
    dy, dx, mask = view_params(n, k, how.shift, how.flip)
    strong = None
    if how.strong and k > 0:
        strong = draw_rand_augment(n, how.n_ops, size, torch.Generator().manual_seed(2_000 + k))
    return ViewParams(dy, dx, mask, strong)


def apply_view(images: torch.Tensor, params: ViewParams, how: ViewAugment) -> torch.Tensor:
    """A uint8 [B,C,H,W] batch under ``params`` (row i: row i of each), uint8 out."""
    out = apply_augment(images, how.shift, params.dy, params.dx, params.mask)
    return out if params.strong is None else apply_rand_augment(out, params.strong, how.cutout)


def view_id(k: int, shift: int, flip: bool, how: Optional[ViewAugment] = None) -> str:
    """Cache key part of view ``k`` (the fixed view keeps the key it always had; a weak view the key it had)."""
    if k == 0:
        return "fixed"
    strong = f"-ra{how.n_ops}-cut{how.cutout:g}" if how is not None and how.strong else ""
    return f"aug{k}-shift{shift}-flip{int(flip)}{strong}"


def _image_size(dataset: Dataset) -> tuple[int, int]:
    h, w = cast(dict, dataset[0])["image"].shape[-2:]
    return int(h), int(w)


class AugmentedView(Dataset):
    """``dataset`` with view ``k``'s augmentation applied to each image (for the FM feature pass)."""

    def __init__(self, dataset: Dataset, k: int, shift: int, flip: bool, how: Optional[ViewAugment] = None) -> None:
        self.dataset = dataset
        self.how = how or ViewAugment(shift, flip)
        n = len(cast(Sized, dataset))
        self.params = draw_view(n, k, self.how, _image_size(dataset) if n else (1, 1))

    def __len__(self) -> int:
        return len(cast(Sized, self.dataset))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = dict(self.dataset[i])
        item["image"] = apply_view(item["image"][None], self.params.rows(torch.tensor([i])), self.how)[0]
        return item


@dataclass
class CachedViews:
    """FM features of K views of the training split, [N, ...] each, and the augmentation of each view (drawn for
    the images the features were computed on, in their order; :meth:`subset` keeps the two together)."""

    features: list[torch.Tensor]
    shift: int
    flip: bool
    how: Optional[ViewAugment] = None
    size: tuple[int, int] = (0, 0)  # image (h, w): where a strong view's Cutout may sit
    params: list[ViewParams] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.how is None:
            self.how = ViewAugment(self.shift, self.flip)
        if not self.params:
            n = len(self.features[0])
            self.params = [draw_view(n, k, self.how, self.size) for k in range(len(self.features))]

    def subset(self, index: torch.Tensor) -> CachedViews:
        """The views of the images at ``index`` (features and augmentations alike), in that order."""
        index = torch.as_tensor(index, dtype=torch.long)
        return CachedViews([f[index] for f in self.features], self.shift, self.flip, self.how, self.size,
                           [p.rows(index) for p in self.params])  # fmt: skip

    def sample(
        self,
        images: torch.Tensor,
        index: torch.Tensor,
        generator: Optional[torch.Generator] = None,
        offset: int = 0,
        total: Optional[int] = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(augmented images, their FM features in fp32) for a batch; one random view per image.

        As with :func:`augment`, the draw is made for the global batch and this process's rows are used.
        """
        assert self.how is not None
        b = len(index)
        v = torch.randint(0, len(self.features), (total or b,), generator=generator)[offset : offset + b]
        out = images.clone()
        feats = torch.empty(b, *self.features[0].shape[1:], dtype=self.features[0].dtype)
        for k in v.unique().tolist():
            rows = v == k
            out[rows] = apply_view(images[rows], self.params[k].rows(index[rows]), self.how)
            feats[rows] = self.features[k][index[rows]]
        return out, feats.float()
