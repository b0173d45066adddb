"""Deterministic, stratified splitting and limited-data subsampling (fraction or k images per class)."""

from __future__ import annotations

from collections import defaultdict

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


def grouped_split(
    labels: np.ndarray, groups: list[str], holdout_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(keep, holdout) indices with whole groups (patients) on one side, the held-out images as close to
    ``holdout_fraction`` of each class as whole groups allow.

    Groups are shuffled with ``seed`` and each is counted in the class of its first image. Per class, the first
    group is held out (so every class is represented) unless it holds all of the class, then each further group only
    if it brings the held-out count closer to the target: a group larger than the remaining gap is skipped, not
    taken (taking patients until the target was passed overshot: 35 of 108 images for an asked 10%).
    """
    members: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    names = list(members)
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    total = {int(c): int((labels == c).sum()) for c in np.unique(labels)}
    held: dict[int, int] = defaultdict(int)
    hold: list[int] = []
    for g in order:
        c, n = int(labels[members[g][0]]), len(members[g])
        target = holdout_fraction * total[c]
        if held[c] + n >= total[c]:  # keep at least one image of the class for training
            continue
        if held[c] == 0 or abs(held[c] + n - target) < abs(held[c] - target):
            hold += members[g]
            held[c] += n
    keep = sorted(set(range(len(labels))) - set(hold))
    if not hold or not keep:
        raise DataError(
            f"cannot hold out {holdout_fraction:.0%} by patient from {len(names)} patients; add patients, give "
            "official splits (a split column or train/val/test folders), or set data.split_by_patient=false"
        )
    return np.asarray(keep, dtype=np.int64), np.asarray(sorted(hold), dtype=np.int64)
