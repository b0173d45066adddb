"""Folders of image files: the ImageFolder layout of a labelled data set, and any folder of unlabelled images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reprodistill.config import DataConfig
from reprodistill.data.image_files import (
    check_files,
    image_suffixes,
    load_image_file,
    relative_names,
    scan_image_files,
)
from reprodistill.data.types import UNLABELLED, Split, UnlabelledPool
from reprodistill.errors import DataError


def read_image_folder(root: Path) -> tuple[dict[str, Split], list[str], list[str]]:
    """(splits, class names, notes) of the ImageFolder layout: root/<class>/<image>, or
    root/{train,val,test}/<class>/<image> for official splits; DICOM files that hold no image (a DICOMDIR, reports)
    are skipped and counted in the notes."""
    split_dirs = {s: root / s for s in ("train", "val", "test") if (root / s).is_dir()}
    if "train" not in split_dirs:
        split_dirs = {"train": root}
    class_names = sorted(p.name for p in split_dirs["train"].iterdir() if p.is_dir())
    if not class_names:
        raise DataError(f"{root}: no class sub-folders; expected {root}/<class_name>/<image files>")
    splits, notes = {}, []
    for name, folder in split_dirs.items():
        paths, labels = [], []
        for c, cls in enumerate(class_names):
            if not (folder / cls).is_dir():
                continue
            scan = scan_image_files(folder / cls)
            paths += [str(p) for p in scan.files]
            labels += [c] * len(scan.files)
            if note := scan.note(str((folder / cls).relative_to(root)) if folder / cls != root else "."):
                notes.append(note)
        extra = sorted({p.name for p in folder.iterdir() if p.is_dir()} - set(class_names))
        if extra:
            raise DataError(f"{folder}: class folders {extra} do not exist in the train split {class_names}")
        if not paths:
            raise DataError(f"{folder}: no image files ({', '.join(image_suffixes())}) under the class folders")
        splits[name] = Split(labels=np.asarray(labels, dtype=np.int64), paths=paths)
    return splits, class_names, notes


def read_unlabelled_folder(
    folder: Path, train: Split, channels: int, load_size: tuple[int, int], cfg: DataConfig, notes: list[str]
) -> UnlabelledPool:
    """Every image file under ``folder`` (any layout, no labels) as the unlabelled pool beside ``train``; decoded
    into memory at the load size when the training images are in memory (npz), else read lazily like them."""
    if not folder.is_dir():
        raise DataError(f"data.unlabelled={folder}: no such folder; give a folder of images, 'rest' or 'none'")
    scan = scan_image_files(folder)
    files = [str(p) for p in scan.files]
    if not files:
        raise DataError(f"data.unlabelled={folder}: no image files ({', '.join(image_suffixes())}) under it")
    if note := scan.note(f"data.unlabelled={folder}"):
        notes.append(note)
    extra = Split(labels=np.full(len(files), UNLABELLED, dtype=np.int64), paths=files, decoding=train.decoding)
    names = dict(zip(files, relative_names(files), strict=True))
    extra = check_files(extra, f"data.unlabelled={folder}", cfg.skip_bad_images, notes, names)
    if train.images is not None:
        images = np.stack([load_image_file(f, channels, load_size, extra.decoding) for f in extra.paths or []])
        extra = Split(extra.labels, images=images)
    n_l, n_u = len(train), len(extra)
    notes.append(f"unlabelled: {n_u} images from {folder}")
    return UnlabelledPool(extra, train.concat(extra), np.arange(n_l), np.arange(n_l, n_l + n_u))
