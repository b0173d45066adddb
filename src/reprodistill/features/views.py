"""K pre-computed augmented views per training image, so augmentation and the teacher-feature cache coexist.

View 0 is the fixed (un-augmented) view; view k >= 1 shifts/flips every image with parameters drawn from a
generator seeded by k, so the views are the same in every run and can be cached. During training each image of a
batch picks one of its K views at random: the student sees exactly that augmented image and the method reads the
FM features of that same view. The student's usual on-the-fly augmentation is replaced by this draw.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sized, cast

import torch
from torch.utils.data import Dataset

from reprodistill.data.transforms import apply_augment, draw_augment


def view_params(n: int, k: int, shift: int, flip: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dy, dx, flip) of view ``k`` for ``n`` images; view 0 is the identity."""
    if k == 0:  # centred crop, no flip
        centre = torch.full((n,), max(shift, 0), dtype=torch.long)
        return centre, centre.clone(), torch.zeros(n, dtype=torch.bool)
    return draw_augment(n, shift, flip, torch.Generator().manual_seed(1_000 + k))


def view_id(k: int, shift: int, flip: bool) -> str:
    """Cache key part of view ``k`` (the fixed view keeps the key it always had)."""
    return "fixed" if k == 0 else f"aug{k}-shift{shift}-flip{int(flip)}"


class AugmentedView(Dataset):
    """``dataset`` with view ``k``'s augmentation applied to each image (for the FM feature pass)."""

    def __init__(self, dataset: Dataset, k: int, shift: int, flip: bool) -> None:
        self.dataset, self.shift = dataset, shift
        self.dy, self.dx, self.flip = view_params(len(cast(Sized, dataset)), k, shift, flip)

    def __len__(self) -> int:
        return len(cast(Sized, self.dataset))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = dict(self.dataset[i])
        item["image"] = apply_augment(item["image"][None], self.shift, self.dy[i : i + 1], self.dx[i : i + 1],
                                      self.flip[i : i + 1])[0]  # fmt: skip
        return item


@dataclass
class CachedViews:
    """FM features of K views of the training split, [N, ...] each, and the augmentation of each view."""

    features: list[torch.Tensor]
    shift: int
    flip: bool

    def __post_init__(self) -> None:
        n = len(self.features[0])
        params = [view_params(n, k, self.shift, self.flip) for k in range(len(self.features))]
        self.dy, self.dx, self.mask = (torch.stack([p[j] for p in params]) for j in range(3))

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
        b = len(index)
        v = torch.randint(0, len(self.features), (total or b,), generator=generator)[offset : offset + b]
        out = apply_augment(images, self.shift, self.dy[v, index], self.dx[v, index], self.mask[v, index])
        feats = torch.empty(b, *self.features[0].shape[1:], dtype=self.features[0].dtype)
        for k in v.unique().tolist():
            rows = v == k
            feats[rows] = self.features[k][index[rows]]
        return out, feats.float()
