"""Label tables as hospitals and challenges publish them: a CSV whose key column names each image by its file
path, its file stem (RSNA's ``patientId``, VinDr's ``image_id``) or its DICOM SOPInstanceUID (SIIM's ``ImageId``),
possibly several rows per image (one per box or per reader), optionally a split column and a patient column.

Settings (``data.csv_*``): the key column and what it holds, the label column, where the images are, the rule for
several rows per image and the patient column that groups the hold-out splits. Defaults read the simple table
``path,label[,split]`` as before. Patient identifiers and UIDs from the user's own table are used to match and group
images and never written anywhere.
"""

from __future__ import annotations

import csv
import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from reprodistill.data.dicom import is_dicom, probe_dicom
from reprodistill.data.image_files import image_suffixes, list_image_files
from reprodistill.data.types import Split
from reprodistill.errors import DataError

KEY_KINDS = ("auto", "path", "stem", "uid")
ROW_RULES = ("agree", "first", "majority", "max")
# key columns of well-known tables, tried in order when data.csv.key_column is not set
KNOWN_KEY_COLUMNS = ("path", "Path", "image", "image_id", "ImageId", "patientId", "dicom_id", "file", "filename")
PATH_COLUMNS = ("path", "Path", "file", "filename")


@dataclass(frozen=True)
class TableSpec:
    """How to read a label table (the ``data.csv_*`` settings).

    Attributes:
        key_column: The column naming each image; None: the first of :data:`KNOWN_KEY_COLUMNS` present.
        key: What it holds: 'path' (relative to the CSV or ``image_root``), 'stem' (file name without suffix),
            'uid' (SOPInstanceUID of a DICOM file), or 'auto' ('uid' when every value looks like a UID, 'path'
            for a path-like column name or values with a folder or an image suffix, else 'stem').
        label_column: The label column.
        image_root: The folder searched for stems and UIDs (and base of relative paths); None: the CSV's folder.
        rows: Several rows for one image: 'agree' (they must give the same label, else an error), 'first',
            'majority' (most frequent label; ties to the first), 'max' (the largest label: any positive reading of a
            0/1 finding counts).
        patient_column: Rows with the same value are one patient: the val / test hold-outs made from the training
            split never split a patient (an official split column is used as given).
    """

    key_column: Optional[str] = None
    key: str = "auto"
    label_column: str = "label"
    image_root: Optional[str] = None
    rows: str = "agree"
    patient_column: Optional[str] = None


@dataclass
class Table:
    """What a table resolved to: per split, file paths, label strings and patient groups (or None)."""

    paths: dict[str, list[str]]
    labels: dict[str, list[str]]
    groups: dict[str, Optional[list[str]]]
    notes: list[str]


def _column(columns: list[str], name: Optional[str]) -> Optional[str]:
    """The table's column called ``name``: the exact name, else the one column equal to it ignoring case (a `Label`
    column for data.csv.label_column=label); None if neither."""
    if name is None or name in columns:
        return name if name in columns else None
    folded = [c for c in columns if c.lower() == name.lower()]
    return folded[0] if len(folded) == 1 else None


def _looks_like_uid(value: str) -> bool:
    parts = value.split(".")
    return len(parts) >= 4 and all(p.isdigit() for p in parts) and len(value) <= 64


def _index_by(root: Path, key: str) -> dict[str, list[str]]:
    """stem -> paths or SOPInstanceUID -> paths of every image file under ``root`` (more than one path: a key that
    several files share)."""
    index: dict[str, list[str]] = defaultdict(list)
    for p in list_image_files(root):
        k = (p.stem if p.suffix else p.name) if key == "stem" else probe_dicom(p).header.get("sop_instance_uid", "") \
            if is_dicom(p) else ""  # fmt: skip
        if k:
            index[k].append(str(p))
    return index


def _resolve_rows(label_rows: list[str], rule: str, where: str, key_column: str) -> str:
    """The label of one image from its rows under ``rule``."""
    if rule == "first" or len(set(label_rows)) == 1:
        return label_rows[0]
    if rule == "agree":
        raise DataError(
            f"{where}: {len(label_rows)} rows for one {key_column} disagree on the label ({sorted(set(label_rows))});"
            " choose a rule: data.csv.rows=first, majority or max"
        )
    if rule == "majority":
        counts = Counter(label_rows)
        best = max(counts.values())
        return next(lab for lab in label_rows if counts[lab] == best)
    try:  # max
        return max(label_rows, key=float)
    except ValueError:
        raise DataError(f"{where}: data.csv.rows=max needs numeric labels, got {sorted(set(label_rows))}") from None


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """(column names, rows) of a CSV, names and values stripped (SIIM's column is " EncodedPixels"); surplus values
    (key None) dropped."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: cannot read CSV ({e})") from None
    columns = [c.strip() for c in (rows[0].keys() if rows else []) if c is not None]
    return columns, [{k.strip(): v.strip() if isinstance(v, str) else "" for k, v in r.items() if k is not None}
                     for r in rows]  # fmt: skip


def _key_kind(key_col: str, values: list[str]) -> str:
    """What a key column holds when ``data.csv.key=auto``: DICOM UIDs, paths, or file stems."""
    if all(_looks_like_uid(v) for v in values):
        return "uid"
    suffixes = set(image_suffixes())  # once, not per row
    if key_col in PATH_COLUMNS or any("/" in v or "\\" in v or Path(v).suffix.lower() in suffixes for v in values):
        return "path"
    return "stem"


def _file_of(value: str, kind: str, root: Path, index: dict[str, list[str]], where: str, key_col: str) -> str:
    """The image file one row's key names (a path under ``root``, or the one file ``index`` has for a stem / UID)."""
    if kind == "path":
        p = Path(value) if Path(value).is_absolute() else root / value
        if not p.is_file():
            raise DataError(f"{where}: image file {p} does not exist")
        return str(p)
    found = index.get(value)
    if found is not None and len(found) > 1:
        files = ", ".join(os.path.relpath(f, root) for f in found[:5])
        raise DataError(
            f"{where}: {value!r} (column {key_col}) names {len(found)} files under {root}: {files}; remove the "
            "duplicates, key the table by path (data.csv.key=path) or give each file its own name"
        )
    if found is None:
        what = "file named" if kind == "stem" else "DICOM file with the SOPInstanceUID"
        raise DataError(f"{where}: no {what} {value!r} (column {key_col}) under {root}; set data.csv.image_root to the "
                        "image folder, or data.csv.key to what the column holds")  # fmt: skip
    return found[0]


def read_table(path: Path, spec: TableSpec) -> Table:
    """Resolve every row of the CSV ``path`` to an image file, group rows per image and split (see TableSpec)."""
    if spec.key not in KEY_KINDS:
        raise DataError(f"data.csv.key={spec.key!r}: choose one of {list(KEY_KINDS)}")
    if spec.rows not in ROW_RULES:
        raise DataError(f"data.csv.rows={spec.rows!r}: choose one of {list(ROW_RULES)}")
    columns, rows = _read_rows(path)
    key_col = _column(columns, spec.key_column) if spec.key_column else next(
        (col for c in KNOWN_KEY_COLUMNS if (col := _column(columns, c))), None)  # fmt: skip
    label_col = _column(columns, spec.label_column)
    patient_col = _column(columns, spec.patient_column) if spec.patient_column else None
    split_col = _column(columns, "split")
    if not rows or key_col is None or label_col is None:
        raise DataError(
            f"{path}: needs a key column ({spec.key_column or ' / '.join(KNOWN_KEY_COLUMNS)}) and the label column "
            f"{spec.label_column!r} (optional: split{', ' + spec.patient_column if spec.patient_column else ''}); "
            f"got {columns or 'no rows'}. Name them with data.csv.key_column / data.csv.label_column"
        )
    if spec.patient_column and patient_col is None:
        raise DataError(f"{path}: data.csv.patient_column={spec.patient_column!r} is not a column; got {columns}")
    root = Path(spec.image_root).expanduser() if spec.image_root else path.parent
    values = [r[key_col] for r in rows]
    kind = spec.key if spec.key != "auto" else _key_kind(key_col, values)
    index = _index_by(root, kind) if kind in ("stem", "uid") else {}
    per_image: dict[tuple[str, str], list[int]] = defaultdict(list)  # (split, file) -> row numbers
    for line, (r, v) in enumerate(zip(rows, values), start=2):
        split = (r.get(split_col) if split_col else None) or "train"
        if split not in ("train", "val", "test"):
            raise DataError(f"{path}:{line}: split {split!r} must be train, val or test")
        per_image[(split, _file_of(v, kind, root, index, f"{path}:{line}", key_col))].append(line - 2)
    out = Table({}, {}, {}, [])
    groups: dict[str, list[str]] = {}
    for (split, file), lines in per_image.items():
        labels = [rows[i][label_col] for i in lines]
        where = f"{path}:{lines[0] + 2}"
        out.paths.setdefault(split, []).append(file)
        out.labels.setdefault(split, []).append(_resolve_rows(labels, spec.rows, where, key_col))
        if patient_col:
            patients = {rows[i][patient_col] for i in lines}
            if len(patients) > 1:
                raise DataError(f"{where}: the rows of one image name {len(patients)} patients")
            groups.setdefault(split, []).append(patients.pop())
    out.groups = {split: groups.get(split) for split in out.paths}
    if "train" not in out.paths:
        raise DataError(f"{path}: no rows in the train split")
    merged = len(rows) - len(per_image)
    out.notes.append(
        f"{path.name}: {len(rows)} rows keyed by {kind} ({key_col}) -> {len(per_image)} images"
        + (f" ({merged} extra rows merged by data.csv.rows={spec.rows})" if merged else "")
    )
    return out


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
