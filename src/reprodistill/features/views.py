"""K pre-computed augmented views per training image, so augmentation and the teacher-feature cache coexist.

View 0 is the fixed (un-augmented) view; view k >= 1 shifts/flips every image (and with ``teacher.view_augment=
strong`` applies RandAugment and Cutout after it) with parameters drawn from generators seeded by k, so the views
are the same in every run and can be cached. During training each image of a batch picks one of its K views at
random: the student sees exactly that augmented image and the method reads the FM features of that same view (the
teacher scores the view the student sees: consistent teaching, Beyer et al. 2022). The student's usual on-the-fly
augmentation is replaced by this draw.

With ``teacher.view_augment=mixup`` each unlabelled image's views k >= 1 are also mixed with another unlabelled
image (a partner and a weight fixed per view and image, so the FM's features of the mixture are cached): the
function matching of Beyer et al. (2022), where the student learns to match the teacher on images between those
it has, on the images that carry no label (a labelled image's views stay unmixed, so its label still holds).
"""

from __future__ import annotations

import hashlib
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
    mix: bool = False  # mix the views of the mixable (unlabelled) images with a partner among them


@dataclass
class ViewParams:
    """The augmentation of one view for n images: shift offsets, flip mask, the RandAugment draw if strong, and with
    mixing each image's partner (an index into the images the view was drawn for, itself where unmixed) and the
    image's own weight (1 where unmixed)."""

    dy: torch.Tensor
    dx: torch.Tensor
    mask: torch.Tensor
    strong: Optional[RandAugmentDraw] = None
    partner: Optional[torch.Tensor] = None
    weight: Optional[torch.Tensor] = None

    def rows(self, index: torch.Tensor) -> ViewParams:
        """The parameters of the images at ``index`` (partners keep pointing into the images drawn for)."""
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        return ViewParams(self.dy[index], self.dx[index], self.mask[index],
                          None if self.strong is None else self.strong.rows(index), pick(self.partner),
                          pick(self.weight))  # fmt: skip

    def mixed(self) -> torch.Tensor:
        """[n] bool: which images are mixed with a partner."""
        return torch.zeros_like(self.mask) if self.weight is None else self.weight < 1


def view_params(n: int, k: int, shift: int, flip: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dy, dx, flip) of view ``k`` for ``n`` images; view 0 is the identity."""
    if k == 0:  # centred crop, no flip
        centre = torch.full((n,), max(shift, 0), dtype=torch.long)
        return centre, centre.clone(), torch.zeros(n, dtype=torch.bool)
    return draw_augment(n, shift, flip, torch.Generator().manual_seed(1_000 + k))


def draw_view(
    n: int, k: int, how: ViewAugment, size: tuple[int, int], mixable: Optional[torch.Tensor] = None
) -> ViewParams:
    """View ``k``'s augmentation of ``n`` images of ``size`` (h, w), the same in every run (seeded by k); view 0 is
    the fixed view, never augmented. With ``how.mix``, each of the ``mixable`` images (indices) gets a partner among
    them (a random permutation) and a weight ~ U(0, 1) of its own."""
    dy, dx, mask = view_params(n, k, how.shift, how.flip)
    strong = partner = weight = None
    if how.strong and k > 0:
        strong = draw_rand_augment(n, how.n_ops, size, torch.Generator().manual_seed(2_000 + k))
    if how.mix and k > 0 and mixable is not None and len(mixable) > 1:
        g = torch.Generator().manual_seed(3_000 + k)
        partner, weight = torch.arange(n), torch.ones(n)
        partner[mixable] = mixable[torch.randperm(len(mixable), generator=g)]
        weight[mixable] = torch.rand(len(mixable), generator=g)
    return ViewParams(dy, dx, mask, strong, partner, weight)


def apply_view(
    images: torch.Tensor, params: ViewParams, how: ViewAugment, partners: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """A uint8 [B,C,H,W] batch under ``params`` (row i: row i of each), uint8 out. A mixed view needs ``partners``:
    the uint8 partner images of its mixed rows (:meth:`ViewParams.mixed`), in row order; each takes the shift, flip
    and strong draw of the row it is mixed into."""
    out = _augment(images, params, how)
    mixed = params.mixed()
    if not bool(mixed.any()):
        return out
    assert partners is not None and params.weight is not None, "a mixed view needs its partner images"
    other = _augment(partners, params.rows(mixed.nonzero()[:, 0]), how)
    w = params.weight[mixed].view(-1, 1, 1, 1)
    out = out.clone()
    out[mixed] = (w * out[mixed].float() + (1 - w) * other.float()).round().clamp(0, 255).to(torch.uint8)
    return out


def _augment(images: torch.Tensor, params: ViewParams, how: ViewAugment) -> torch.Tensor:
    """The shift / flip of ``params``, and its strong draw if any (no mixing)."""
    out = apply_augment(images, how.shift, params.dy, params.dx, params.mask)
    return out if params.strong is None else apply_rand_augment(out, params.strong, how.cutout)


def view_id(
    k: int, shift: int, flip: bool, how: Optional[ViewAugment] = None, mixable: Optional[torch.Tensor] = None
) -> str:
    """Cache key part of view ``k`` (the fixed view keeps the key it always had; a weak view the key it had); a mixed
    view names which images were mixable, as the partners depend on them."""
    if k == 0:
        return "fixed"
    strong = f"-ra{how.n_ops}-cut{how.cutout:g}" if how is not None and how.strong else ""
    mix = ""
    if how is not None and how.mix and mixable is not None:
        rows = hashlib.sha1(mixable.to(torch.int64).numpy().tobytes()).hexdigest()[:10]
        mix = f"-mixU01-{rows}"
    return f"aug{k}-shift{shift}-flip{int(flip)}{strong}{mix}"


def _image_size(dataset: Dataset) -> tuple[int, int]:
    h, w = cast(dict, dataset[0])["image"].shape[-2:]
    return int(h), int(w)


def partner_images(source: Dataset, params: ViewParams) -> Optional[torch.Tensor]:
    """The uint8 partner images of ``params``' mixed rows, read from ``source`` (the images the view was drawn
    for), in row order; None where no row is mixed."""
    mixed = params.mixed()
    if not bool(mixed.any()):
        return None
    assert params.partner is not None
    return torch.stack([cast(dict, source[int(j)])["image"] for j in params.partner[mixed]])


class AugmentedView(Dataset):
    """``dataset`` with view ``k``'s augmentation applied to each image (for the FM feature pass); with
    ``how.mix``, the ``mixable`` images (indices) mixed with their partners among them."""

    def __init__(
        self,
        dataset: Dataset,
        k: int,
        shift: int,
        flip: bool,
        how: Optional[ViewAugment] = None,
        mixable: Optional[torch.Tensor] = None,
    ) -> None:
        self.dataset = dataset
        self.how = how or ViewAugment(shift, flip)
        n = len(cast(Sized, dataset))
        self.params = draw_view(n, k, self.how, _image_size(dataset) if n else (1, 1), mixable)

    def __len__(self) -> int:
        return len(cast(Sized, self.dataset))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = dict(self.dataset[i])
        row = self.params.rows(torch.tensor([i]))
        item["image"] = apply_view(item["image"][None], row, self.how, partner_images(self.dataset, row))[0]
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
    # Mixed views (how.mix): the images the views were drawn for (their partners are read from it) and which of
    # them are mixable (indices into it).
    source: Optional[Dataset] = None
    mixable: Optional[torch.Tensor] = None

    def __post_init__(self) -> None:
        if self.how is None:
            self.how = ViewAugment(self.shift, self.flip)
        if not self.params:
            n = len(self.features[0])
            self.params = [draw_view(n, k, self.how, self.size, self.mixable) for k in range(len(self.features))]
        if any(bool(p.mixed().any()) for p in self.params) and self.source is None:
            raise ValueError("mixed views read their partner images from `source`; pass the images they were drawn for")

    def subset(self, index: torch.Tensor) -> CachedViews:
        """The views of the images at ``index`` (features and augmentations alike), in that order; partners are
        still read from the whole ``source``."""
        index = torch.as_tensor(index, dtype=torch.long)
        return CachedViews([f[index] for f in self.features], self.shift, self.flip, self.how, self.size,
                           [p.rows(index) for p in self.params], self.source, self.mixable)  # fmt: skip

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
            params = self.params[k].rows(index[rows])
            partners = None if self.source is None else partner_images(self.source, params)
            out[rows] = apply_view(images[rows], params, self.how, partners)
            feats[rows] = self.features[k][index[rows]]
        return out, feats.float()
