"""Readers for the supported data sources: MedMNIST npz (local or downloaded), ImageFolder trees and CSV files.

Every reader returns a :class:`DataBundle` of train/val/test :class:`Split` objects holding either decoded uint8
arrays (npz) or file paths that are decoded lazily (folders, CSV: any format of
:mod:`reprodistill.data.image_files`, DICOM included), plus class names and channel count.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from reprodistill.config import DataConfig
from reprodistill.data.csv_table import TableSpec, grouped_split, read_table
from reprodistill.data.dicom import DicomDecoding
from reprodistill.data.image_files import IMAGE_SUFFIXES, dicom_summary, list_image_files, load_image_file, unreadable
from reprodistill.data.splits import stratified_split, subsample
from reprodistill.errors import DataError

# Where medmnist:<flag> files are looked for, after data.root and $REPRODISTILL_DATA.
# ~/.medmnist is the medmnist package's own download folder; ../shared/data is this project's shared data folder.
DEFAULT_MEDMNIST_DIRS = ("~/.medmnist", "../shared/data", "../../shared/data")
# Label of an image used without its label (data.unlabelled); the training losses skip it.
UNLABELLED = -1


@dataclass
class Split:
    """One split: labels plus either in-memory uint8 images [N,H,W,C] or image file paths (decoded with ``dicom``
    where they are DICOM files)."""

    labels: np.ndarray
    images: Optional[np.ndarray] = None
    paths: Optional[list[str]] = None
    dicom: DicomDecoding = field(default_factory=DicomDecoding)
    # patient of each item (a label table's data.csv_patient_column): hold-outs never split one; kept in memory only
    groups: Optional[list[str]] = None

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, indices: np.ndarray) -> "Split":
        """The sub-split at ``indices``."""
        return Split(
            labels=self.labels[indices],
            images=None if self.images is None else self.images[indices],
            paths=None if self.paths is None else [self.paths[i] for i in indices],
            dicom=self.dicom,
            groups=None if self.groups is None else [self.groups[i] for i in indices],
        )

    def concat(self, other: "Split") -> "Split":
        """This split's items followed by ``other``'s (both in memory or both file paths)."""
        if (self.images is None) != (other.images is None):
            raise DataError("cannot join an in-memory split with a split of image files")
        return Split(
            labels=np.concatenate([self.labels, other.labels]),
            images=None if self.images is None else np.concatenate([self.images, other.images]),
            paths=None if self.paths is None else [*self.paths, *other.paths],
            dicom=self.dicom,
            groups=None if self.groups is None or other.groups is None else [*self.groups, *other.groups],
        )

    def unlabelled(self) -> "Split":
        """The same images with every label hidden (:data:`UNLABELLED`), so no code path can read one."""
        return Split(np.full(len(self.labels), UNLABELLED, dtype=np.int64), self.images, self.paths, self.dicom)


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
    # how the DICOM files among the images were decoded (image_files.dicom_summary; empty without DICOM)
    dicom: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# ----------------------------------------------------------------------------------------------- MedMNIST npz


def _medmnist_search_dirs(root: str | None) -> list[Path]:
    dirs = [root, os.environ.get("REPRODISTILL_DATA"), *DEFAULT_MEDMNIST_DIRS]
    return [Path(d).expanduser() for d in dirs if d]


def _download_medmnist(flag: str, target: Path) -> Path:
    """Download <flag>.npz with the medmnist package (needs internet and `pip install medmnist`)."""
    try:
        import medmnist  # noqa: PLC0415 - optional dependency
    except ImportError:
        raise DataError("medmnist package not installed") from None
    if flag not in medmnist.INFO:
        raise DataError(f"medmnist has no data set {flag!r}; flags: {sorted(medmnist.INFO)}")
    target.mkdir(parents=True, exist_ok=True)
    getattr(medmnist, medmnist.INFO[flag]["python_class"])(split="train", download=True, root=str(target))
    return target / f"{flag}.npz"


def find_medmnist(flag: str, root: str | None = None, download: bool = True) -> Path:
    """Path of ``<flag>.npz``: searched locally first, then downloaded through medmnist when online."""
    dirs = _medmnist_search_dirs(root)
    for d in dirs:
        candidate = d / f"{flag}.npz"
        if candidate.is_file():
            return candidate
    if download:
        try:
            return _download_medmnist(flag, dirs[0] if root else Path("~/.medmnist").expanduser())
        except Exception as e:  # noqa: BLE001 - offline, no package, bad flag: all end in the same advice
            reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
    else:
        reason = "download disabled"
    raise DataError(
        f"medmnist:{flag}: no {flag}.npz found in {[str(d) for d in dirs]} and download failed ({reason}). "
        f"Put {flag}.npz in one of those folders, set data.root=<folder>, or give data.source=<path to .npz>."
    )


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


# ------------------------------------------------------------------------------------------ folders and CSV files


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


def read_csv(path: Path, spec: TableSpec = TableSpec()) -> tuple[dict[str, Split], list[str], list[str]]:
    """(splits, class names, notes) of a label table (:mod:`reprodistill.data.csv_table`); label strings are sorted
    numerically when they are numbers."""
    table = read_table(path, spec)
    every = {lab for labels in table.labels.values() for lab in labels}
    class_names = sorted(every, key=lambda s: (not s.isdigit(), int(s) if s.isdigit() else 0, s))
    index = {c: i for i, c in enumerate(class_names)}
    splits = {
        s: Split(
            np.asarray([index[lab] for lab in table.labels[s]], dtype=np.int64),
            paths=table.paths[s],
            groups=table.groups[s],
        )  # fmt: skip
        for s in table.paths
    }
    return splits, class_names, table.notes


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
        images = np.stack([load_image_file(f, channels, load_size, extra.dicom) for f in extra.paths])
        extra = Split(extra.labels, images=images)
    n_l, n_u = len(train), len(extra)
    notes.append(f"unlabelled: {n_u} images from {folder}")
    return UnlabelledPool(extra, train.concat(extra), np.arange(n_l), np.arange(n_l, n_l + n_u))


# --------------------------------------------------------------------------------------------------- the bundle


def drop_unreadable(split: Split, where: str, notes: list[str]) -> Split:
    """Leave out image files that do not decode, noting how many and which."""
    if split.paths is None:
        return split
    bad = unreadable(split.paths, split.dicom)
    if bad:
        names = [Path(split.paths[i]).name for i in bad[:5]]
        notes.append(f"{where}: skipped {len(bad)} unreadable image file(s), e.g. {names}")
        split = split.take(np.setdiff1d(np.arange(len(split)), bad))
    return split


def _fill_missing_splits(splits: dict[str, Split], cfg: DataConfig, notes: list[str]) -> dict[str, Split]:
    """Create stratified val/test hold-outs from train when the source has no official ones."""
    for name, fraction, seed in (("test", cfg.test_fraction, cfg.split_seed), ("val", cfg.val_fraction,
                                                                                cfg.split_seed + 1)):  # fmt: skip
        if name in splits:
            continue
        train = splits["train"]
        if train.groups is not None:  # whole patients on one side
            keep, hold = grouped_split(train.labels, train.groups, fraction, seed)
            how = f"by patient ({len(set(train.groups))} patients)"
        else:
            keep, hold = stratified_split(train.labels, fraction, seed)
            how = "stratified"
        splits[name], splits["train"] = train.take(hold), train.take(keep)
        notes.append(f"no official {name} split: held out {fraction:.0%} of train, {how}")
    return splits


# Label names of the MedMNIST v2 sets (the `medmnist` package's INFO records), so class names come from the data
# source, never from a preset applied to other data.
MEDMNIST_CLASS_NAMES = {
    "pneumoniamnist": ["normal", "pneumonia"],
    "breastmnist": ["malignant", "normal, benign"],
    "chestmnist": None,  # multi-label: not supported as a single-label task
}


def load_data(cfg: DataConfig) -> DataBundle:
    """Read ``cfg.source``, make the splits, apply limited-data subsampling and check labels."""
    src = cfg.source
    notes: list[str] = []
    if src.startswith("medmnist:"):
        flag = src.split(":", 1)[1]
        path = find_medmnist(flag, cfg.root)
        splits = read_npz(path)
        class_names = MEDMNIST_CLASS_NAMES.get(flag.lower())
        notes.append(f"read {path}")
    else:
        path = Path(src).expanduser()
        if not path.exists():
            raise DataError(
                f"data.source {src!r} does not exist; give medmnist:<flag>, a .npz file, an image folder or a CSV file"
            )
        if path.is_dir():
            splits, class_names = read_image_folder(path)
        elif path.suffix.lower() == ".npz":
            splits, class_names = read_npz(path), None
        elif path.suffix.lower() == ".csv":
            spec = TableSpec(cfg.csv_key_column, cfg.csv_key, cfg.csv_label_column, cfg.csv_image_root, cfg.csv_rows,
                             cfg.csv_patient_column)  # fmt: skip
            splits, class_names, table_notes = read_csv(path, spec)
            notes += table_notes
        else:
            raise DataError(f"{path}: unsupported file type {path.suffix!r}; use .npz, .csv or an image folder")
    decoding = DicomDecoding(cfg.dicom_window, cfg.dicom_frames)
    for s in splits.values():
        s.dicom = decoding
    if cfg.skip_bad_images:
        splits = {name: drop_unreadable(s, name, notes) for name, s in splits.items()}
    # every DICOM header read, one file of each kind decoded: a missing codec stops now, not mid-training
    dicom = dicom_summary([p for s in splits.values() for p in (s.paths or [])], decoding)
    if dicom:
        notes.append(f"DICOM: {dicom['files']} files, window {decoding.window}, {dicom['photometric']}")
    for name, s in splits.items():
        if len(s) == 0:
            raise DataError(f"{src}: the {name} split is empty")
    splits = _fill_missing_splits(splits, cfg, notes)

    num_classes = int(max(s.labels.max() for s in splits.values() if len(s)) + 1)
    if cfg.class_names is not None:
        if len(cfg.class_names) < num_classes:
            raise DataError(
                f"data.class_names has {len(cfg.class_names)} names but the labels go up to {num_classes - 1}; "
                f"give {num_classes} names or leave data.class_names unset"
            )
        class_names = list(cfg.class_names)
    elif class_names is None:
        class_names = [str(i) for i in range(num_classes)]
    for name, s in splits.items():
        if len(s) == 0:
            raise DataError(f"{src}: the {name} split is empty")
    present = np.unique(splits["train"].labels)
    if len(present) < 2:
        only = class_names[int(present[0])] if len(present) else "-"
        raise DataError(
            f"{src}: the training split holds one class only ({only}); a classifier needs images of at least two "
            "classes"
        )
    missing = sorted(set(range(len(class_names))) - set(present.tolist()))
    if missing:
        raise DataError(f"{src}: classes {[class_names[i] for i in missing]} have no training images")

    before = len(splits["train"])
    subset_seed = cfg.split_seed if cfg.subset_seed is None else cfg.subset_seed
    sel = subsample(splits["train"].labels, cfg.fraction, cfg.k_per_class, subset_seed)
    full_train = splits["train"]
    splits["train"] = full_train.take(sel)
    if len(sel) != before:
        notes.append(f"limited data: {len(sel)} of {before} training images")
    unlabelled = None
    if cfg.unlabelled == "rest":
        rest = np.setdiff1d(np.arange(before), sel)
        if len(rest):
            unlabelled = UnlabelledPool(full_train.take(rest).unlabelled(), full_train, sel, rest)
            notes.append(f"unlabelled: the other {len(rest)} training images, labels hidden (data.unlabelled=rest)")
        else:
            notes.append("data.unlabelled=rest: every training image is labelled, so there are no unlabelled images")

    train = splits["train"]
    if train.images is not None:
        channels = train.images.shape[-1] if cfg.channels == "auto" else int(cfg.channels)
        native = train.images.shape[1:3]
        load_size = (cfg.load_size, cfg.load_size) if cfg.load_size else (int(native[0]), int(native[1]))
    else:
        channels = 3 if cfg.channels == "auto" else int(cfg.channels)
        load_size = (cfg.load_size or 224,) * 2
    if cfg.unlabelled not in ("none", "rest"):
        unlabelled = read_unlabelled_folder(Path(cfg.unlabelled).expanduser(), train, channels, load_size, cfg, notes)
    return DataBundle(
        train=train,
        val=splits["val"],
        test=splits["test"],
        class_names=class_names,
        channels=channels,
        load_size=load_size,
        source=src,
        notes=notes,
        unlabelled=unlabelled,
        dicom=dicom,
    )
