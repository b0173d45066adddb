"""Shared fixtures: the real PneumoniaMNIST file from ../shared/data and small real subsets of it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
PNEUMONIA = REPO.parent / "shared" / "data" / "pneumoniamnist.npz"
BREAST = REPO.parent / "shared" / "data" / "breastmnist.npz"


@pytest.fixture(scope="session")
def pneumonia_path() -> Path:
    if not PNEUMONIA.is_file():
        pytest.skip(f"needs the shared data file {PNEUMONIA} (the official MedMNIST v2 pneumoniamnist.npz)")
    return PNEUMONIA


@pytest.fixture(scope="session")
def breast_path() -> Path:
    if not BREAST.is_file():
        pytest.skip(f"needs the shared data file {BREAST} (the official MedMNIST v2 breastmnist.npz)")
    return BREAST


@pytest.fixture(scope="session")
def pneumonia_arrays(pneumonia_path) -> dict[str, np.ndarray]:
    with np.load(pneumonia_path) as z:
        return {k: z[k] for k in z.files}


def balanced_subset_npz(path: Path, arrays: dict[str, np.ndarray], sizes: dict[str, int], seed: int) -> Path:
    """Write a class-balanced real subset in MedMNIST layout with ``sizes[split]`` images per split."""
    out = {}
    rng = np.random.default_rng(seed)
    for split, n in sizes.items():
        labels = arrays[f"{split}_labels"][:, 0]
        idx = np.concatenate([rng.choice(np.flatnonzero(labels == c), n // 2, replace=False) for c in (0, 1)])
        out[f"{split}_images"] = arrays[f"{split}_images"][idx]
        out[f"{split}_labels"] = arrays[f"{split}_labels"][idx]
    np.savez(path, **out)
    return path


@pytest.fixture()
def small_npz(tmp_path, pneumonia_arrays) -> Path:
    """A real 2-class subset: 60 train / 40 val / 40 test images, both classes in each."""
    return balanced_subset_npz(tmp_path / "small.npz", pneumonia_arrays, {"train": 60, "val": 40, "test": 40}, seed=0)


def build_method(name: str, ctx, **options):
    """Method ``name`` built on a MethodContext with ``method_options`` given as keyword arguments."""
    from reprodistill.methods import METHODS

    cls = METHODS.get(name)
    return cls(ctx, cls.parse_options(options))


@pytest.fixture()
def tiny_teacher(tmp_path):
    """Factory of a small randomly initialised CNN FM (resnet10t) loaded from a local checkpoint file."""
    import timm
    import torch

    from reprodistill.config import TeacherConfig
    from reprodistill.models import create_teacher

    def make(image_size: int):
        torch.manual_seed(0)
        torch.save(timm.create_model("resnet10t", pretrained=False, num_classes=0).state_dict(), tmp_path / "fm.pt")
        return create_teacher(TeacherConfig(name=str(tmp_path / "fm.pt"), arch="resnet10t", image_size=image_size))

    return make


@pytest.fixture(scope="session")
def teachers(tmp_path_factory):
    """A small random CNN FM (64 px: 2x2 maps) and a small random ViT FM, loaded from local checkpoint files."""
    import timm
    import torch

    from reprodistill.config import TeacherConfig
    from reprodistill.models import create_teacher

    folder = tmp_path_factory.mktemp("fms")
    torch.manual_seed(0)
    torch.save(timm.create_model("resnet10t", num_classes=0).state_dict(), folder / "cnn.pt")
    torch.save(timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=0).state_dict(), folder / "vit.pt")
    cnn = create_teacher(TeacherConfig(name=str(folder / "cnn.pt"), arch="resnet10t", image_size=64))
    vit = create_teacher(TeacherConfig(name=str(folder / "vit.pt"), arch="vit_tiny_patch16_224", image_size=32))
    return {"cnn": cnn, "vit": vit}
