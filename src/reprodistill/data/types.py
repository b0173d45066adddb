"""The data types every reader returns: a :class:`Split` (labels plus in-memory images or file paths), the
:class:`UnlabelledPool` of a semi-supervised run, and the :class:`DataBundle` of a whole data set."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from reprodistill.errors import DataError

# Label of an image used without its label (data.unlabelled); the training losses skip it.
UNLABELLED = -1


@dataclass
class Split:
    """One split: labels plus either in-memory uint8 images [N,H,W,C] or image file paths (each decoded by its format
    with ``decoding[format name]`` as its settings, e.g. the DICOM window)."""

    labels: np.ndarray
    images: Optional[np.ndarray] = None
    paths: Optional[list[str]] = None
    decoding: dict[str, Any] = field(default_factory=dict)
    # patient of each item (a label table's data.csv.patient_column): hold-outs never split one; kept in memory only
    groups: Optional[list[str]] = None

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, indices: np.ndarray) -> "Split":
        """The sub-split at ``indices``."""
        return Split(
            labels=self.labels[indices],
            images=None if self.images is None else self.images[indices],
            paths=None if self.paths is None else [self.paths[i] for i in indices],
            decoding=self.decoding,
            groups=None if self.groups is None else [self.groups[i] for i in indices],
        )

    def concat(self, other: "Split") -> "Split":
        """This split's items followed by ``other``'s (both in memory or both file paths)."""
        if (self.images is None) != (other.images is None):
            raise DataError("cannot join an in-memory split with a split of image files")
        return Split(
            labels=np.concatenate([self.labels, other.labels]),
            images=None if self.images is None else np.concatenate([self.images, other.images]),
            paths=None if self.paths is None else [*self.paths, *(other.paths or [])],
            decoding=self.decoding,
            groups=None if self.groups is None or other.groups is None else [*self.groups, *other.groups],
        )

    def unlabelled(self) -> "Split":
        """The same images with every label hidden (:data:`UNLABELLED`), so no code path can read one."""
        return Split(np.full(len(self.labels), UNLABELLED, dtype=np.int64), self.images, self.paths, self.decoding)


@dataclass
class UnlabelledPool:
    """Training images used without their labels, and where they and the labelled ones sit in the full training split
    (so FM features of the full split, cached once, serve every fraction and seed)."""

    split: Split
    full_train: Split
    labelled_index: np.ndarray
    unlabelled_index: np.ndarray


@dataclass
class DataBundle:
    """A data set ready for training: three splits, class names and channels."""

    train: Split
    val: Split
    test: Split
    class_names: list[str]
    channels: int
    load_size: tuple[int, int]
    source: str
    notes: list[str] = field(default_factory=list)
    # data.unlabelled=rest on a limited-data run: the left-out training images, labels hidden
    unlabelled: Optional[UnlabelledPool] = None
    # how the DICOM files among the images were decoded (the DICOM format's summary; empty without DICOM)
    dicom: dict = field(default_factory=dict)
    # how val / test came to be: the source's own, or held out of train (by patient or stratified)
    splits_made: str = "official splits"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)
