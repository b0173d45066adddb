"""Image files on disk, one decoder per format behind one call: :func:`load_image_file` decodes a file to uint8
[H,W,C] at the load size, :func:`list_image_files` finds them under a folder. PIL decodes PNG / JPEG / TIFF / BMP
/ WebP / GIF (8/16-bit and float with their real range); :mod:`reprodistill.data.dicom` decodes DICOM (``.dcm``,
``.dicom`` or extension-less files with the DICM preamble). A new format is a new module and a branch in
:func:`decode_file`.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image, UnidentifiedImageError

from reprodistill.data.dicom import (
    DICOM_SUFFIXES,
    IMAGE,
    NOT_AN_IMAGE,
    DicomDecoding,
    DicomInfo,
    is_dicom,
    probe_dicom,
    read_dicom,
    read_header,
)
from reprodistill.data.types import Split
from reprodistill.errors import DataError

log = logging.getLogger("reprodistill")
PIL_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
IMAGE_SUFFIXES = PIL_SUFFIXES | DICOM_SUFFIXES


def is_image_file(path: Path) -> bool:
    """A file this package decodes: a known suffix, or no suffix and the DICOM preamble."""
    suffix = path.suffix.lower()
    return suffix in IMAGE_SUFFIXES or (suffix == "" and is_dicom(path))


@dataclass
class FileScan:
    """The image files under a folder, and the DICOM files found there that hold no image (a DICOMDIR, reports,
    presentation states...), counted by what they are."""

    files: list[Path]
    skipped: Counter = field(default_factory=Counter)

    def note(self, where: str) -> Optional[str]:
        """A log line about the skipped files, or None."""
        if not self.skipped:
            return None
        kinds = ", ".join(f"{n} {what}" for what, n in sorted(self.skipped.items()))
        return f"{where}: skipped {sum(self.skipped.values())} DICOM file(s) that hold no image ({kinds})"


def scan_image_files(folder: Path) -> FileScan:
    """Every image file under ``folder`` (any depth), sorted; DICOM files that hold no image are left out and
    counted (every CD / PACS export carries a DICOMDIR)."""
    scan = FileScan([])
    for p in sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p)):
        if is_dicom(p) and (probe := probe_dicom(p)).kind == NOT_AN_IMAGE:
            scan.skipped[probe.what] += 1
        else:
            scan.files.append(p)
    return scan


def list_image_files(folder: Path) -> list[Path]:
    """Every image file under ``folder`` (any depth), sorted, without the DICOM files that hold no image."""
    return scan_image_files(folder).files


def file_problem(path: str | Path) -> Optional[str]:
    """Why an image file cannot be used, found cheaply before training (None: usable): for DICOM its header and the
    length of its pixel data (:func:`~reprodistill.data.dicom.probe_dicom`), for other formats the header and
    Pillow's structural check (PNG checksums). Decoding itself is checked on one file of each kind
    (:func:`dicom_summary`)."""
    p = Path(path)
    try:
        if is_dicom(p):
            probe = probe_dicom(p)
            return None if probe.kind == IMAGE else probe.what if probe.kind != NOT_AN_IMAGE else (
                f"holds no image ({probe.what})")  # fmt: skip
        with Image.open(p) as im:
            im.verify()
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        return f"cannot be read ({type(e).__name__}: {str(e)[:120]})"
    return None


def relative_names(paths: list[str]) -> list[str]:
    """Each path relative to the folder all of them share (what tells apart files with one base name, e.g. the
    IM00001.dcm of every series of a PACS export)."""
    if not paths:
        return []
    root = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])
    return [os.path.relpath(os.path.abspath(p), root) for p in paths]


def _to_uint8(im: Image.Image) -> np.ndarray:
    """Pixels of any PIL mode as uint8 [H,W] or [H,W,3]: 16-bit and float images scaled by their real range.

    PIL's ``convert('L')`` clips 16-bit ('I;16', 'I') and float ('F') pixels at 255, so a 12/16-bit X-ray came out
    all white. Integer images are scaled by the full range of their bit depth when they use more than 8 bits of it
    (a 12-bit scan stored in 16 bits is scaled by its own maximum instead, so it is not left dark); float images by
    their own min/max. Palette, RGBA, LA and CMYK images are converted to RGB (alpha dropped).
    """
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        if im.mode == "F":
            lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        else:
            lo, hi = 0.0, float(arr.max())
            hi = 65535.0 if hi > 4095 else (4095.0 if hi > 255 else 255.0)
        scaled = (arr - lo) / max(hi - lo, 1e-12)
        return np.clip(np.nan_to_num(scaled) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if im.mode not in ("L", "RGB"):
        im = im.convert("RGB")
    return np.asarray(im, dtype=np.uint8)


def decode_file(path: str | Path, dicom: DicomDecoding = DicomDecoding()) -> tuple[np.ndarray, DicomInfo | None]:
    """(uint8 [H,W] / [H,W,1|3] pixels at the file's own size, the DICOM decoding record or None) of one file; a
    broken file raises a DataError naming it."""
    p = Path(path)
    if is_dicom(p):
        return read_dicom(p, dicom)
    try:
        with warnings.catch_warnings(record=True) as caught:  # Pillow's decompression-bomb warning: one log line
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                arr = _to_uint8(im)
        if any(issubclass(w.category, Image.DecompressionBombWarning) for w in caught):
            log.warning("%s: %dx%d pixels, very large for an image; decoding it is slow and it is resized to the "
                        "load size anyway", p.name, arr.shape[1], arr.shape[0])  # fmt: skip
        return arr, None
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(
            f"{p}: cannot decode image ({e}); remove or replace the file, or set data.skip_bad_images=true"
        ) from None


def load_image_file(
    path: str, channels: int, size: tuple[int, int], dicom: DicomDecoding = DicomDecoding()
) -> np.ndarray:
    """Decode one image file to uint8 [H,W,C] at ``size`` (8/16-bit, float, palette, RGBA, DICOM...); a broken file
    raises a DataError naming it."""
    arr, _ = decode_file(path, dicom)
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


def dicom_summary(paths: list[str], dicom: DicomDecoding) -> dict[str, object]:
    """How the DICOM files among ``paths`` are decoded, for data.json and export: counts per modality, photometric
    interpretation and transfer syntax (technical tags only). Every header is read, and one file of each (transfer
    syntax, photometric interpretation, bit depth) is decoded in full, so a codec that is missing or fails on that
    kind of file stops here, before any training, with what to install or change."""
    files = [p for p in paths if is_dicom(Path(p))]
    if not files:
        return {}
    seen: dict[str, Counter] = {k: Counter() for k in ("modality", "photometric", "transfer_syntax")}
    probes: dict[tuple[str, str, str], str] = {}
    for p in files:
        h = read_header(p)
        for k in seen:
            seen[k][h[k]] += 1
        probes.setdefault((h["transfer_syntax"], h["photometric"], h["bits_stored"]), p)
    windows = Counter(read_dicom(p, dicom)[1].window.split(" ", 1)[-1] for p in probes.values())
    return {
        "files": len(files),
        "decoding": {"window": dicom.window, "frames": dicom.frames},
        **{k: dict(v) for k, v in seen.items()},
        "windows_of_probed_files": dict(windows),
    }
