"""Folders of image files: the ImageFolder layout of a labelled data set, and any folder of unlabelled images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reprodistill.config import DataConfig
from reprodistill.data.image_files import IMAGE_SUFFIXES, drop_unreadable, list_image_files, load_image_file
from reprodistill.data.types import UNLABELLED, Split, UnlabelledPool
from reprodistill.errors import DataError


def read_image_folder(root: Path) -> tuple[dict[str, Split], list[str]]:
    """ImageFolder layout: root/<class>/<image>, or root/{train,val,test}/<class>/<image> for official splits."""
    split_dirs = {s: root / s for s in ("train", "val", "test") if (root / s).is_dir()}
    if "train" not in split_dirs:
        split_dirs = {"train": root}
    class_names = sorted(p.name for p in split_dirs["train"].iterdir() if p.is_dir())
    if not class_names:
        raise DataError(f"{root}: no class sub-folders; expected {root}/<class_name>/<image files>")
    splits = {}
    for name, folder in split_dirs.items():
        paths, labels = [], []
        for c, cls in enumerate(class_names):
            files = list_image_files(folder / cls) if (folder / cls).is_dir() else []
            paths += [str(p) for p in files]
            labels += [c] * len(files)
        extra = sorted({p.name for p in folder.iterdir() if p.is_dir()} - set(class_names))
        if extra:
            raise DataError(f"{folder}: class folders {extra} do not exist in the train split {class_names}")
        if not paths:
            raise DataError(f"{folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) under the class folders")
        splits[name] = Split(labels=np.asarray(labels, dtype=np.int64), paths=paths)
    return splits, class_names


def read_unlabelled_folder(
    folder: Path, train: Split, channels: int, load_size: tuple[int, int], cfg: DataConfig, notes: list[str]
) -> UnlabelledPool:
    """Every image file under ``folder`` (any layout, no labels) as the unlabelled pool beside ``train``; decoded
    into memory at the load size when the training images are in memory (npz), else read lazily like them."""
    if not folder.is_dir():
        raise DataError(f"data.unlabelled={folder}: no such folder; give a folder of images, 'rest' or 'none'")
    files = [str(p) for p in list_image_files(folder)]
    if not files:
        raise DataError(f"data.unlabelled={folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) under it")
    extra = Split(labels=np.full(len(files), UNLABELLED, dtype=np.int64), paths=files, dicom=train.dicom)
    if cfg.skip_bad_images:
        extra = drop_unreadable(extra, "unlabelled", notes)
    if train.images is not None:
        images = np.stack([load_image_file(f, channels, load_size, extra.dicom) for f in extra.paths or []])
        extra = Split(extra.labels, images=images)
    n_l, n_u = len(train), len(extra)
    notes.append(f"unlabelled: {n_u} images from {folder}")
    return UnlabelledPool(extra, train.concat(extra), np.arange(n_l), np.arange(n_l, n_l + n_u))
