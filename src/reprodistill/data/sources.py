"""Where a data set comes from: one reader per source kind behind :data:`READERS` (MedMNIST npz, ImageFolder trees,
CSV label tables), then the steps every source shares in :func:`load_data` (DICOM decoding settings, hold-out
splits, label checks, limited-data subsets, unlabelled pools).

A reader returns a :class:`SourceRead`: train (and, where the source has them, val / test) :class:`Split` s holding
either decoded uint8 arrays (npz) or file paths decoded lazily (folders, CSV: any format of
:mod:`reprodistill.data.image_files`, DICOM included), and the class names when the source names them. A new source
kind is one module with such a function and a line in :data:`READERS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from reprodistill.config import DataConfig
from reprodistill.data.csv_table import TableSpec, read_csv
from reprodistill.data.dicom import is_dicom, probe_dicom
from reprodistill.data.folder import read_image_folder, read_unlabelled_folder
from reprodistill.data.image_files import check_files, format_settings, formats_summary, relative_names
from reprodistill.data.npz import MEDMNIST_CLASS_NAMES, find_medmnist, read_npz
from reprodistill.data.splits import grouped_split, stratified_split, subsample
from reprodistill.data.types import UNLABELLED, DataBundle, Split, UnlabelledPool
from reprodistill.errors import DataError

__all__ = ["UNLABELLED", "DataBundle", "Split", "UnlabelledPool", "find_medmnist", "load_data", "read_npz"]


@dataclass
class SourceRead:
    """What a source reader found: its splits, its class names (None: numbered) and notes for the log."""

    splits: dict[str, Split]
    class_names: Optional[list[str]] = None
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SourceKind:
    """One kind of ``data.source``: what it is (for messages), whether a source string is one, and its reader."""

    what: str
    accepts: Callable[[str], bool]
    read: Callable[[str, DataConfig], SourceRead]


def _path(src: str) -> Path:
    return Path(src).expanduser()


def _medmnist(src: str, cfg: DataConfig) -> SourceRead:
    flag = src.split(":", 1)[1]
    path = find_medmnist(flag, cfg.root)  # the standard places, else a download from the official record
    return SourceRead(read_npz(path), MEDMNIST_CLASS_NAMES.get(flag.lower()), [f"read {path}"])


def _csv(src: str, cfg: DataConfig) -> SourceRead:
    c = cfg.csv
    return SourceRead(*read_csv(_path(src), TableSpec(c.key_column, c.key, c.label_column, c.image_root, c.rows,
                                                      c.patient_column)))  # fmt: skip


# The kinds of data.source, tried in order; a new kind is a reader module and one entry here.
READERS: list[SourceKind] = [
    SourceKind("medmnist:<flag>", lambda s: s.startswith("medmnist:"), _medmnist),
    SourceKind("an image folder", lambda s: _path(s).is_dir(), lambda s, cfg: SourceRead(*read_image_folder(_path(s)))),
    SourceKind(
        "a .npz file",
        lambda s: _path(s).suffix.lower() == ".npz" and _path(s).is_file(),
        lambda s, cfg: SourceRead(read_npz(_path(s))),
    ),  # fmt: skip
    SourceKind("a CSV label table", lambda s: _path(s).suffix.lower() == ".csv" and _path(s).is_file(), _csv),
]


def read_source(cfg: DataConfig) -> SourceRead:
    """The reader of ``cfg.source`` (the first kind in :data:`READERS` that accepts it), run."""
    src = cfg.source
    for kind in READERS:
        if kind.accepts(src):
            return kind.read(src, cfg)
    kinds = ", ".join(k.what for k in READERS)
    path = _path(src)
    if not path.exists():
        raise DataError(f"data.source {src!r} does not exist; give {kinds}")
    raise DataError(f"{path}: unsupported file type {path.suffix!r}; give {kinds}")


def dicom_patient_groups(split: Split) -> Optional[list[str]]:
    """The patient of every file of ``split`` from its DICOM header (PatientID, else StudyInstanceUID, else the file
    itself); None where no file names a patient or study, so grouping would change nothing. In memory only."""
    if split.paths is None:
        return None
    groups, named = [], False
    for p in split.paths:
        h = probe_dicom(p).header if is_dicom(Path(p)) else {}
        key = f"patient:{h['patient_id']}" if h.get("patient_id") else f"study:{h['study_uid']}" if h.get(
            "study_uid") else f"file:{p}"  # fmt: skip
        named = named or not key.startswith("file:")
        groups.append(key)
    return groups if named else None


def _fill_missing_splits(splits: dict[str, Split], cfg: DataConfig, notes: list[str]) -> tuple[dict[str, Split], str]:
    """Create val/test hold-outs from train when the source has no official ones: whole patients on one side when
    the data name patients (a CSV patient column, or DICOM headers with ``data.split_by_patient``), else stratified
    by class. Returns the splits and how they were made (for data.json)."""
    missing = [s for s in ("test", "val") if s not in splits]
    if not missing:
        return splits, "official splits"
    train = splits["train"]
    grouping = "by patient (the table's patient column)" if train.groups is not None else ""
    if train.groups is None and cfg.split_by_patient and (groups := dicom_patient_groups(train)) is not None:
        train.groups, grouping = groups, "by patient (DICOM PatientID / StudyInstanceUID)"
    for name, fraction, seed in (("test", cfg.test_fraction, cfg.split_seed), ("val", cfg.val_fraction,
                                                                                cfg.split_seed + 1)):  # fmt: skip
        if name in splits:
            continue
        train = splits["train"]
        if train.groups is not None:
            keep, hold = grouped_split(train.labels, train.groups, fraction, seed)
            patients = len(set(train.groups))
            how = f"{grouping}: {len({train.groups[i] for i in hold})} of {patients} patients"
        else:
            keep, hold = stratified_split(train.labels, fraction, seed)
            how = "stratified by class" + ("" if cfg.split_by_patient else " (data.split_by_patient=false)")
        notes.append(f"no official {name} split: held out {len(hold)} of {len(train)} training images "
                     f"({len(hold) / len(train):.0%}; asked {fraction:.0%}), {how}")  # fmt: skip
        splits[name], splits["train"] = train.take(hold), train.take(keep)
    made = f"{', '.join(missing)} held out of train {grouping or 'stratified by class'}"
    return splits, made


def _checked_files(splits: dict[str, Split], cfg: DataConfig, notes: list[str]) -> tuple[dict[str, Split], dict]:
    """Every file checked (headers, pixel-data lengths) and one file of each kind decoded, so a broken file or a
    missing codec stops now, before any training, not mid-training or at test time; returns the splits (without the
    files ``data.skip_bad_images`` leaves out) and the DICOM summary."""
    decoding = format_settings(cfg)
    for s in splits.values():
        s.decoding = decoding
    every = [p for s in splits.values() for p in (s.paths or [])]
    names = dict(zip(every, relative_names(every), strict=True))
    splits = {n: check_files(s, f"{cfg.source} ({n})", cfg.skip_bad_images, notes, names) for n, s in splits.items()}
    dicom = formats_summary([p for s in splits.values() for p in (s.paths or [])], decoding).get("dicom", {})
    if dicom:
        notes.append(f"DICOM: {dicom['files']} files, window {cfg.dicom.window}, {dicom['photometric']}")
    return splits, dicom


def _class_names(splits: dict[str, Split], cfg: DataConfig, found: Optional[list[str]]) -> list[str]:
    """The class names (``data.class_names``, else the source's, else numbers), after checking that every split has
    images and the training split every class."""
    src = cfg.source
    num_classes = int(max(s.labels.max() for s in splits.values() if len(s)) + 1)
    if cfg.class_names is not None:
        if len(cfg.class_names) < num_classes:
            raise DataError(
                f"data.class_names has {len(cfg.class_names)} names but the labels go up to {num_classes - 1}; "
                f"give {num_classes} names or leave data.class_names unset"
            )
        names = list(cfg.class_names)
    else:
        names = found if found is not None else [str(i) for i in range(num_classes)]
    for name, s in splits.items():
        if len(s) == 0:
            raise DataError(f"{src}: the {name} split is empty (too few images or patients to hold it out)")
    present = np.unique(splits["train"].labels)
    if len(present) < 2:
        only = names[int(present[0])] if len(present) else "-"
        raise DataError(
            f"{src}: the training split holds one class only ({only}); a classifier needs images of at least two "
            "classes"
        )
    missing = sorted(set(range(len(names))) - set(present.tolist()))
    if missing:
        raise DataError(f"{src}: classes {[names[i] for i in missing]} have no training images")
    return names


def _limited(full_train: Split, cfg: DataConfig, notes: list[str]) -> tuple[Split, Optional[UnlabelledPool]]:
    """The limited-data training subset (``data.fraction`` / ``data.k_per_class``) and, with
    ``data.unlabelled=rest``, the images it leaves out as the unlabelled pool."""
    before = len(full_train)
    subset_seed = cfg.split_seed if cfg.subset_seed is None else cfg.subset_seed
    sel = subsample(full_train.labels, cfg.fraction, cfg.k_per_class, subset_seed)
    if len(sel) != before:
        notes.append(f"limited data: {len(sel)} of {before} training images")
    if cfg.unlabelled != "rest":
        return full_train.take(sel), None
    rest = np.setdiff1d(np.arange(before), sel)
    if not len(rest):
        notes.append("data.unlabelled=rest: every training image is labelled, so there are no unlabelled images")
        return full_train.take(sel), None
    notes.append(f"unlabelled: the other {len(rest)} training images, labels hidden (data.unlabelled=rest)")
    return full_train.take(sel), UnlabelledPool(full_train.take(rest).unlabelled(), full_train, sel, rest)


def _channels_and_size(train: Split, cfg: DataConfig) -> tuple[int, tuple[int, int]]:
    """Image channels and load size: the arrays' own for in-memory data, else RGB at 224 px unless set."""
    if train.images is not None:
        channels = train.images.shape[-1] if cfg.channels == "auto" else int(cfg.channels)
        native = train.images.shape[1:3]
        return channels, (cfg.load_size, cfg.load_size) if cfg.load_size else (int(native[0]), int(native[1]))
    return 3 if cfg.channels == "auto" else int(cfg.channels), (cfg.load_size or 224,) * 2


def load_data(cfg: DataConfig) -> DataBundle:
    """Read ``cfg.source``, check every file, make the splits, check the labels, apply limited-data subsampling and
    gather the unlabelled images."""
    found = read_source(cfg)
    notes = list(found.notes)
    splits, dicom = _checked_files(found.splits, cfg, notes)
    splits, made = _fill_missing_splits(splits, cfg, notes)
    class_names = _class_names(splits, cfg, found.class_names)
    train, unlabelled = _limited(splits["train"], cfg, notes)
    channels, load_size = _channels_and_size(train, cfg)
    if cfg.unlabelled not in ("none", "rest"):
        unlabelled = read_unlabelled_folder(Path(cfg.unlabelled).expanduser(), train, channels, load_size, cfg, notes)
    return DataBundle(
        train=train,
        val=splits["val"],
        test=splits["test"],
        class_names=class_names,
        channels=channels,
        load_size=load_size,
        source=cfg.source,
        notes=notes,
        unlabelled=unlabelled,
        dicom=dicom,
        splits_made=made,
    )
