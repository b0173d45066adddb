"""MedMNIST-style ``.npz`` files ({train,val,test}_{images,labels}), found locally or downloaded from the official
record (:mod:`.download`): ``data.source=medmnist:<flag>`` or a path to the file."""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path

import numpy as np

from reprodistill.data.download import download_medmnist
from reprodistill.data.types import Split
from reprodistill.errors import DataError

# Where medmnist:<flag> files are looked for, after data.root and $REPRODISTILL_DATA.
# ~/.medmnist is the medmnist package's own download folder; ../shared/data is this project's shared data folder.
DEFAULT_MEDMNIST_DIRS = ("~/.medmnist", "../shared/data", "../../shared/data")
# Where a download goes without data.root (the medmnist package's own folder, so both find each other's files).
MEDMNIST_HOME = "~/.medmnist"
log = logging.getLogger("reprodistill")
# Label names of the MedMNIST v2 sets (the `medmnist` package's INFO records), so class names come from the data
# source, never from a preset applied to other data.
MEDMNIST_CLASS_NAMES = {
    "pneumoniamnist": ["normal", "pneumonia"],
    "breastmnist": ["malignant", "normal, benign"],
    "chestmnist": None,  # multi-label: not supported as a single-label task
}


def _medmnist_search_dirs(root: str | None) -> list[Path]:
    dirs = [root, os.environ.get("REPRODISTILL_DATA"), *DEFAULT_MEDMNIST_DIRS]
    return [Path(d).expanduser() for d in dirs if d]


def find_medmnist(flag: str, root: str | None = None, download: bool = True) -> Path:
    """Path of ``<flag>.npz``: searched locally first (``data.root``, ``$REPRODISTILL_DATA``, ``~/.medmnist``, the
    shared data folder), then downloaded once into ``data.root`` or ``~/.medmnist`` (:mod:`.download`)."""
    dirs = _medmnist_search_dirs(root)
    for d in dirs:
        candidate = d / f"{flag}.npz"
        if candidate.is_file():
            return candidate
    folder = Path(root).expanduser() if root else Path(MEDMNIST_HOME).expanduser()
    if not download:
        raise DataError(
            f"medmnist:{flag}: no {flag}.npz in {[str(d) for d in dirs]} and downloads are off; put it in {folder}, "
            "set data.root=<folder> holding it, or give data.source=<path to .npz>"
        )
    log.info("medmnist:%s: not found locally (%s); downloading it into %s", flag, ", ".join(map(str, dirs)), folder)
    try:
        return download_medmnist(flag, folder)
    except DataError as e:
        raise DataError(f"medmnist:{flag}: {e}") from None


def _labels_1d(labels: np.ndarray, where: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise DataError(f"{where}: labels have shape {labels.shape}; only single-label classification is supported")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{where}: labels must be integers, got dtype {labels.dtype}")
    if len(labels) and labels.min() < 0:
        raise DataError(f"{where}: negative label {labels.min()}")
    return labels.astype(np.int64)


def _images_nhwc(images: np.ndarray, where: str) -> np.ndarray:
    if images.dtype != np.uint8:
        raise DataError(f"{where}: images must be uint8, got {images.dtype}")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise DataError(f"{where}: images must be [N,H,W] or [N,H,W,1|3], got shape {images.shape}")
    return images


def read_npz(path: Path) -> dict[str, Split]:
    """Read a MedMNIST-style npz ({train,val,test}_{images,labels}); returns the splits present."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(
            f"{path}: not a readable .npz file ({e}); re-download it or point data.source elsewhere"
        ) from None
    splits = {}
    for name in ("train", "val", "test"):
        if f"{name}_images" in arrays:
            if f"{name}_labels" not in arrays:
                raise DataError(f"{path}: has {name}_images but no {name}_labels")
            images = _images_nhwc(arrays[f"{name}_images"], f"{path}:{name}_images")
            labels = _labels_1d(arrays[f"{name}_labels"], f"{path}:{name}_labels")
            if len(images) != len(labels):
                raise DataError(f"{path}: {name} has {len(images)} images but {len(labels)} labels")
            splits[name] = Split(labels=labels, images=images)
    if "train" not in splits:
        raise DataError(
            f"{path}: no train_images/train_labels arrays (found {sorted(arrays)}); expected MedMNIST layout"
        )
    return splits
