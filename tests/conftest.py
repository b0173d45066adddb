"""Shared fixtures: the real PneumoniaMNIST file from ../shared/data and small real subsets of it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
PNEUMONIA = REPO.parent / "shared" / "data" / "pneumoniamnist.npz"


@pytest.fixture(scope="session")
def pneumonia_path() -> Path:
    assert PNEUMONIA.is_file(), f"tests need the shared data file {PNEUMONIA}"
    return PNEUMONIA


@pytest.fixture(scope="session")
def pneumonia_arrays(pneumonia_path) -> dict[str, np.ndarray]:
    with np.load(pneumonia_path) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture()
def small_npz(tmp_path, pneumonia_arrays) -> Path:
    """A real 2-class subset in MedMNIST layout: 60 train / 40 val / 40 test images, both classes in each."""
    out = {}
    rng = np.random.default_rng(0)
    for split, n in (("train", 60), ("val", 40), ("test", 40)):
        labels = pneumonia_arrays[f"{split}_labels"][:, 0]
        idx = np.concatenate([rng.choice(np.flatnonzero(labels == c), n // 2, replace=False) for c in (0, 1)])
        out[f"{split}_images"] = pneumonia_arrays[f"{split}_images"][idx]
        out[f"{split}_labels"] = pneumonia_arrays[f"{split}_labels"][idx]
    path = tmp_path / "small.npz"
    np.savez(path, **out)
    return path
