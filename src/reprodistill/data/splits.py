"""Deterministic, stratified splitting and limited-data subsampling (fraction or k images per class)."""

from __future__ import annotations

import numpy as np

from reprodistill.errors import DataError


def _per_class(labels: np.ndarray, seed: int) -> dict[int, np.ndarray]:
    """Indices of each class, shuffled with a fixed seed (so subsets are nested as the fraction grows)."""
    rng = np.random.default_rng(seed)
    return {int(c): rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)}


def stratified_split(labels: np.ndarray, holdout_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (keep, holdout) with the same class proportions; each class keeps at least one image.

    Args:
        labels: Integer class labels.
        holdout_fraction: Fraction of every class moved to the hold-out part.
        seed: Seed of the shuffle.
    """
    if len(labels) == 0:
        raise DataError("cannot split an empty set of images")
    keep, hold = [], []
    for c, idx in _per_class(labels, seed).items():
        if len(idx) < 2:
            raise DataError(f"class {c} has {len(idx)} image(s); a stratified split needs at least 2 per class")
        n_hold = min(len(idx) - 1, max(1, int(round(holdout_fraction * len(idx)))))
        hold.append(idx[:n_hold])
        keep.append(idx[n_hold:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(hold))


def subsample(labels: np.ndarray, fraction: float = 1.0, k_per_class: int | None = None, seed: int = 0) -> np.ndarray:
    """Indices of a limited-data training subset: ``k_per_class`` images per class, else a stratified ``fraction``.

    Every class keeps at least one image. With the same seed, smaller subsets are contained in larger ones.
    """
    if k_per_class is None and fraction >= 1.0:
        return np.arange(len(labels))
    chosen = []
    for c, idx in _per_class(labels, seed).items():
        n = min(len(idx), k_per_class) if k_per_class is not None else max(1, int(round(fraction * len(idx))))
        chosen.append(idx[:n])
    return np.sort(np.concatenate(chosen))
