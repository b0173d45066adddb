"""Image files on disk, every format behind one call: :func:`load_image_file` decodes a file to uint8 [H,W,C] at the
load size, :func:`scan_image_files` finds them under a folder, :func:`check_files` checks every one before training.
Each format is one file in :mod:`reprodistill.data.formats` (Pillow's formats, DICOM); the settings of each come
from its own config section (``data.dicom``) as :func:`format_settings`.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
from PIL import Image, UnidentifiedImageError

from reprodistill.data.formats import FORMATS, format_of
from reprodistill.data.types import Split
from reprodistill.errors import DataError

log = logging.getLogger("reprodistill")


def image_suffixes() -> list[str]:
    """Every suffix a registered format reads (sorted), for messages and for telling paths from other keys."""
    return sorted({s for name in FORMATS.names() for s in FORMATS.get(name).suffixes})


def is_image_file(path: Path) -> bool:
    """A file some registered format reads: its suffix, or no suffix and a format that finds itself inside."""
    return format_of(path) is not None


def format_settings(data_config: Any) -> dict[str, Any]:
    """Each format's decoding settings from the run's ``DataConfig`` (its own section), by format name."""
    return {name: FORMATS.get(name).settings(data_config) for name in FORMATS.names()}


@dataclass
class FileScan:
    """The image files under a folder, and the files found there that hold no image (a DICOMDIR, reports,
    presentation states...), counted by what they are."""

    files: list[Path]
    skipped: Counter = field(default_factory=Counter)

    def note(self, where: str) -> Optional[str]:
        """A log line about the skipped files, or None."""
        if not self.skipped:
            return None
        kinds = ", ".join(f"{n} {what}" for what, n in sorted(self.skipped.items()))
        return f"{where}: skipped {sum(self.skipped.values())} file(s) that hold no image ({kinds})"


def scan_image_files(folder: Path) -> FileScan:
    """Every image file under ``folder`` (any depth), sorted; files of an image format that hold no image are left
    out and counted (every CD / PACS export carries a DICOMDIR)."""
    scan = FileScan([])
    for p in sorted(p for p in folder.rglob("*") if p.is_file()):
        fmt = format_of(p)
        if fmt is None:
            continue
        if (what := fmt.not_an_image(p)) is not None:
            scan.skipped[what] += 1
        else:
            scan.files.append(p)
    return scan


def list_image_files(folder: Path) -> list[Path]:
    """Every image file under ``folder`` (any depth), sorted, without the files that hold no image."""
    return scan_image_files(folder).files


def file_problem(path: str | Path) -> Optional[str]:
    """Why an image file cannot be used, found cheaply before training (None: usable): its format's check (DICOM:
    header and pixel-data length; Pillow: header and structure). Decoding itself is checked on one file of each kind
    (:func:`formats_summary`)."""
    p = Path(path)
    fmt = format_of(p)
    if fmt is None:
        return f"is not in a known image format ({', '.join(image_suffixes())})"
    try:
        return fmt.problem(p)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        return f"cannot be read ({type(e).__name__}: {str(e)[:120]})"


def relative_names(paths: list[str]) -> list[str]:
    """Each path relative to the folder all of them share (what tells apart files with one base name, e.g. the
    IM00001.dcm of every series of a PACS export)."""
    if not paths:
        return []
    root = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])
    return [os.path.relpath(os.path.abspath(p), root) for p in paths]


def decode_file(path: str | Path, decoding: Mapping[str, Any] = {}) -> tuple[np.ndarray, Any]:  # noqa: B006
    """(uint8 [H,W] / [H,W,1|3] pixels at the file's own size, its format's decoding record or None) of one file,
    with ``decoding[format name]`` as its format's settings; a broken file raises a DataError naming it."""
    p = Path(path)
    fmt = format_of(p)
    if fmt is None:
        raise DataError(f"{p}: not in a known image format ({', '.join(image_suffixes())})")
    return fmt.decode(p, decoding.get(fmt.name))


def load_image_file(
    path: str,
    channels: int,
    size: tuple[int, int],
    decoding: Mapping[str, Any] = {},  # noqa: B006 - read only
) -> np.ndarray:
    """Decode one image file to uint8 [H,W,C] at ``size`` (8/16-bit, float, palette, RGBA, DICOM...) with its format's
    settings from ``decoding``; a broken file raises a DataError naming it."""
    arr, _ = decode_file(path, decoding)
    img = Image.fromarray(arr[..., 0] if arr.ndim == 3 and arr.shape[-1] == 1 else arr)
    img = img.convert("L" if channels == 1 else "RGB")
    if img.size != (size[1], size[0]):
        img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    out = np.asarray(img, dtype=np.uint8)
    return out[..., None] if out.ndim == 2 else out


def check_files(split: Split, where: str, skip: bool, notes: list[str], names: dict[str, str]) -> Split:
    """``split`` after checking every image file (:func:`file_problem`): with ``skip`` the unusable files are left
    out and counted in ``notes`` by cause; otherwise the first unusable ones stop the run, each named by
    ``names[path]`` (its path relative to the data) with its cause and the option that skips it."""
    if split.paths is None:
        return split
    problems = [(i, why) for i, p in enumerate(split.paths) if (why := file_problem(p)) is not None]
    if not problems:
        return split
    if not skip:
        shown = "; ".join(f"{names.get(split.paths[i], split.paths[i])}: {why}" for i, why in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise DataError(
            f"{where}: {len(problems)} image file(s) cannot be used: {shown}{more}. Replace them, or set "
            "data.skip_bad_images=true to leave them out (counted in the log and data.json)"
        )
    causes = Counter(why.split(" (")[0].split(":")[0] for _, why in problems)
    notes.append(f"{where}: skipped {len(problems)} unusable image file(s) (data.skip_bad_images): "
                 + ", ".join(f"{n} {c}" for c, n in sorted(causes.items())))  # fmt: skip
    return split.take(np.setdiff1d(np.arange(len(split)), [i for i, _ in problems]))


def formats_summary(paths: list[str], decoding: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each format's summary of its files among ``paths`` (:meth:`ImageFormat.summary`; formats with nothing to say
    left out), for data.json and export."""
    by_format: dict[str, list[str]] = {}
    for p in paths:
        fmt = format_of(Path(p))
        if fmt is not None:
            by_format.setdefault(fmt.name, []).append(p)
    out = {}
    for name, files in by_format.items():
        summary = FORMATS.get(name).summary(files, decoding.get(name))
        if summary:
            out[name] = summary
    return out
