"""DICOM files to the pixels a clinician sees, as uint8 [H,W,C]: the one decoder every data source and ``predict``
use for ``.dcm`` files and extension-less files with the DICM preamble.

The order is the standard's display pipeline (PS3.3 C.7.6.3.1 / C.11): stored values -> modality LUT (rescale slope
and intercept, fractional or negative; pydicom's decoded dtype decides the sign and bit depth) -> a declared window
-> MONOCHROME1 / INVERSE presentation inverted in float after windowing -> [0, 1] -> uint8. Colour: YBR decoded to
RGB by pydicom 3, PALETTE COLOR through its lookup table. pydicom itself applies no LUT and never inverts
MONOCHROME1 (pydicom#783), so a reader that stops at ``pixel_array`` trains on inverted or all-white X-rays.

Nothing here reads or reports a patient tag: the decoding record (:class:`DicomInfo`) holds technical tags only,
and pydicom's validation warnings, which echo raw element values, are silenced while reading.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from reprodistill.errors import DataError

DICOM_SUFFIXES = {".dcm", ".dicom"}
# Windows named for convenience (centre, width in modality units: HU for CT).
NAMED_WINDOWS = {"lung": (-600.0, 1500.0), "soft_tissue": (40.0, 400.0), "bone": (400.0, 1800.0),
                 "brain": (40.0, 80.0)}  # fmt: skip
FRAME_POLICIES = ("first", "middle", "refuse")

# transfer syntax UID prefix -> what to install when nothing here decodes it (GPL decoders named as such)
_CODECS = {
    "1.2.840.10008.1.2.4.80": 'pip install pyjpegls (MIT; or: pip install -e ".[dicom]")',
    "1.2.840.10008.1.2.4.81": 'pip install pyjpegls (MIT; or: pip install -e ".[dicom]")',
    "1.2.840.10008.1.2.4.57": 'pip install pylibjpeg pylibjpeg-libjpeg (GPLv3; or: pip install -e ".[dicom-gpl]")',
    "1.2.840.10008.1.2.4.70": 'pip install pylibjpeg pylibjpeg-libjpeg (GPLv3; or: pip install -e ".[dicom-gpl]")',
    "1.2.840.10008.1.2.4.51": 'pip install pylibjpeg pylibjpeg-libjpeg (GPLv3; or: pip install -e ".[dicom-gpl]")',
    "1.2.840.10008.1.2.4.90": 'pip install pylibjpeg pylibjpeg-openjpeg (MIT; or: pip install -e ".[dicom]")',
    "1.2.840.10008.1.2.4.91": 'pip install pylibjpeg pylibjpeg-openjpeg (MIT; or: pip install -e ".[dicom]")',
    "1.2.840.10008.1.2.4.201": 'pip install pylibjpeg pylibjpeg-openjpeg (MIT; or: pip install -e ".[dicom]")',
    "1.2.840.10008.1.2.4.202": 'pip install pylibjpeg pylibjpeg-openjpeg (MIT; or: pip install -e ".[dicom]")',
    "1.2.840.10008.1.2.4.203": 'pip install pylibjpeg pylibjpeg-openjpeg (MIT; or: pip install -e ".[dicom]")',
}


class MissingCodecError(DataError):
    """A DICOM transfer syntax that no installed package decodes; the message names what to install."""


@dataclass(frozen=True)
class DicomDecoding:
    """How DICOM pixels become an image (``data.dicom.window`` / ``data.dicom.frames``; export records it so
    ``predict`` decodes as training did).

    Attributes:
        window: 'auto' (the file's VOI LUT or window centre/width if it has one, else min-max), 'file' (the file's,
            an error if it has none), 'minmax' (the image's own range), a named window (lung, soft_tissue, bone,
            brain) or 'centre,width' in modality units (e.g. '-600,1500' HU).
        frames: Multi-frame files: 'first' or 'middle' frame, or 'refuse' (stop and ask for a policy).
    """

    window: str = "auto"
    frames: str = "middle"

    def __post_init__(self) -> None:
        parse_window(self.window)
        if self.frames not in FRAME_POLICIES:
            raise DataError(f"data.dicom.frames={self.frames!r}: choose one of {list(FRAME_POLICIES)}")


def parse_window(text: str) -> Optional[tuple[float, float]]:
    """(centre, width) of a fixed window, or None for 'auto' / 'file' / 'minmax'; a bad value raises a DataError."""
    if text in ("auto", "file", "minmax"):
        return None
    if text in NAMED_WINDOWS:
        return NAMED_WINDOWS[text]
    try:
        centre, width = (float(v) for v in text.split(","))
    except ValueError:
        centre, width = math.nan, math.nan
    if not (math.isfinite(centre) and math.isfinite(width) and width > 0):
        raise DataError(
            f"data.dicom.window={text!r}: use auto, file, minmax, one of {sorted(NAMED_WINDOWS)} or 'centre,width' "
            "with width > 0 (e.g. '-600,1500' for a lung window in HU)"
        )
    return centre, width


@dataclass
class DicomInfo:
    """What was read and how (technical tags only; no patient, study or UID tag)."""

    modality: str
    photometric: str
    transfer_syntax: str
    shape: list[int]
    stored_dtype: str
    modality_range: list[float]  # min / max after the modality LUT (HU for CT)
    window: str  # what was applied: 'centre,width (file|fixed)', 'VOI LUT (file)' or 'minmax'
    inverted: bool
    channels: int
    frame: Optional[int] = None  # the frame used of a multi-frame file

    def describe(self) -> dict[str, Any]:
        return asdict(self)


def is_dicom(path: Path) -> bool:
    """A .dcm / .dicom file, or any file with the 'DICM' preamble at byte 128 (DICOM Part 10)."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


@contextmanager
def _quiet_reading() -> Iterator[None]:
    """pydicom's validation warnings echo raw element values (names, IDs): never let them reach a log."""
    from pydicom import config

    mode = config.settings.reading_validation_mode
    config.settings.reading_validation_mode = config.IGNORE
    pydicom_log = logging.getLogger("pydicom")
    level = pydicom_log.level
    pydicom_log.setLevel(logging.ERROR)  # its warnings are caught and reported by cause here
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        config.settings.reading_validation_mode = mode
        pydicom_log.setLevel(level)


def _window(x: np.ndarray, centre: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """The DICOM VOI window function (PS3.3 C.11.2.1.2) onto [0, 1]."""
    if function == "LINEAR_EXACT":
        y = (x - centre) / width + 0.5
    elif function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (x - centre) / width))
    else:  # LINEAR: the standard's default
        if width <= 1:  # the formula divides by width - 1; a width of 1 is a threshold at the centre
            return (x > centre - 0.5).astype(np.float32)
        y = (x - (centre - 0.5)) / (width - 1.0) + 0.5
    return np.clip(y, 0.0, 1.0)


def _first(value: Any) -> float:
    """The first of a multi-valued element (several windows may be given), as a float."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0]
    return float(value)


def _minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def _functional_group_rescale(ds: Any, frame: Optional[int]) -> Optional[tuple[float, float]]:
    """(slope, intercept) of an enhanced multi-frame file, which keeps its rescale in the shared or per-frame
    functional groups instead of the top level (where pydicom's modality LUT looks)."""
    for name in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
        groups = ds.get(name)
        if not groups:
            continue
        item = groups[min(frame or 0, len(groups) - 1)] if name.startswith("PerFrame") else groups[0]
        if "PixelValueTransformationSequence" in item:
            t = item.PixelValueTransformationSequence[0]
            return float(t.get("RescaleSlope", 1.0)), float(t.get("RescaleIntercept", 0.0))
    return None


def _grey(
    ds: Any, arr: np.ndarray, decoding: DicomDecoding, frame: Optional[int] = None
) -> tuple[np.ndarray, str, list[float]]:
    """Modality LUT, then the window: (float [H,W] in [0,1], the window applied, the modality range)."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    grouped = None if "RescaleSlope" in ds or "ModalityLUTSequence" in ds else _functional_group_rescale(ds, frame)
    if grouped is not None:
        x = arr.astype(np.float64) * grouped[0] + grouped[1]
    else:
        x = apply_modality_lut(arr, ds).astype(np.float64)
    rng = [float(x.min()), float(x.max())]
    fixed = parse_window(decoding.window)
    has_voi_lut = "VOILUTSequence" in ds
    has_window = "WindowCenter" in ds and "WindowWidth" in ds
    # FOR PRESENTATION images are display-ready: 'auto' leaves them at their own range
    presentation = str(ds.get("PresentationIntentType", "")).upper() == "FOR PRESENTATION"
    mode = decoding.window
    if mode == "auto":
        mode = "file" if (has_voi_lut or has_window) and not presentation else "minmax"
    if fixed is not None:
        return _window(x, *fixed), f"{fixed[0]:g},{fixed[1]:g} (fixed)", rng
    if mode == "minmax":
        return _minmax(x), "minmax", rng
    if has_voi_lut:
        y = apply_voi_lut(x, ds, index=0).astype(np.float64)  # LUT output range: 0 .. 2^bits - 1 of its entries
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        return np.clip(y / (2.0**bits - 1.0), 0.0, 1.0), "VOI LUT (file)", rng
    if not has_window:
        raise DataError("data.dicom.window=file: this DICOM file has no VOI LUT and no window centre/width; use "
                        "data.dicom.window=auto (min-max then), minmax or 'centre,width'")  # fmt: skip
    c, w = _first(ds.WindowCenter), _first(ds.WindowWidth)
    function = str(ds.get("VOILUTFunction", "LINEAR")).upper()
    return _window(x, c, w, function), f"{c:g},{w:g} (file{', ' + function if function != 'LINEAR' else ''})", rng


def _colour(ds: Any, arr: np.ndarray, photometric: str) -> np.ndarray:
    """RGB float [H,W,3] in [0,1] of a colour image (YBR already converted to RGB by pydicom 3)."""
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        rgb = apply_color_lut(arr, ds).astype(np.float64)
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        return np.clip(rgb / (2.0 ** (16 if bits > 8 else 8) - 1.0), 0.0, 1.0)
    bits = int(ds.get("BitsStored", 8))
    return np.clip(arr.astype(np.float64) / (2.0**bits - 1.0), 0.0, 1.0)


def _frame_index(ds: Any, policy: str, where: str) -> Optional[int]:
    n = int(ds.get("NumberOfFrames", 1) or 1)
    if n <= 1:
        return None
    if policy == "refuse":
        raise DataError(f"{where}: a multi-frame DICOM ({n} frames); set data.dicom.frames=first or middle")
    return 0 if policy == "first" else n // 2


# What a DICOM file can be before it is decoded (probe_dicom).
IMAGE, NOT_AN_IMAGE, BROKEN = "image", "not an image", "broken"
_DIRECTORY_SOP_CLASS = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage: a DICOMDIR


@dataclass(frozen=True)
class DicomProbe:
    """What a DICOM file is, from its header and the length of its pixel data (no pixel decoded).

    Attributes:
        kind: :data:`IMAGE`, :data:`NOT_AN_IMAGE` (a DICOMDIR, a report, a presentation state...: skipped wherever
            files are listed) or :data:`BROKEN` (a cut header or truncated pixel data: never usable).
        what: For a non-image, what it is (``DICOMDIR``, ``structured report``, the SOP class name); for a broken
            file, the cause.
        header: The technical tags that decide decoding, the SOPInstanceUID a label table may key images by, and
            the patient / study a file belongs to (to keep a patient on one side of the splits). In memory only:
            never written or logged.
    """

    kind: str
    what: str
    header: dict[str, str]


def _sop_class_kind(sop_class: str) -> str:
    """A readable name of a non-image SOP class."""
    import pydicom

    if sop_class == _DIRECTORY_SOP_CLASS:
        return "DICOMDIR"
    name = pydicom.uid.UID(sop_class).name if sop_class else "no SOP class"
    return "structured report" if " SR " in f" {name} " else name.removesuffix(" Storage")


def _is_image_class(sop_class: str) -> bool:
    """Whether a SOP class stores images (CT / MR / CR / DX / US / secondary capture ... 'Image Storage')."""
    import pydicom

    return "Image Storage" in pydicom.uid.UID(sop_class).name if sop_class else False


def _pixel_bytes_expected(ds: Any) -> Optional[int]:
    """Bytes of native (uncompressed) pixel data the header announces: rows x columns x samples x frames x bits;
    None where a value is missing or not a number (the declared length is the only measure then)."""
    try:
        n = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1)
        n *= int(ds.get("NumberOfFrames", 1) or 1)
        return (n * int(ds.get("BitsAllocated", 8) or 8) + 7) // 8
    except (AttributeError, TypeError, ValueError):
        return None


def _parse_end(ds: Any) -> Optional[int]:
    """Byte offset where the last top-level element read ends (a complete file ends exactly there); None where an
    element of undefined length (a sequence) makes it unknown."""
    raw = [e for e in ds._dict.values() if hasattr(e, "value_tell") and hasattr(e, "length")]
    if not raw:
        return 0 if not len(ds._dict) else None
    last = max(raw, key=lambda e: e.value_tell)
    return None if last.length == 0xFFFFFFFF else last.value_tell + last.length


@functools.lru_cache(maxsize=None)
def _probe(path: str, mtime_ns: int, size: int) -> DicomProbe:
    import pydicom
    from pydicom.tag import Tag

    with _quiet_reading(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            # large values (the pixel data) are not read, only their length and place in the file
            ds = pydicom.dcmread(path, force=True, defer_size=1024)
        except Exception as e:  # noqa: BLE001 - any unreadable header is the same error to the user
            return DicomProbe(BROKEN, f"not a readable DICOM file, its header is cut or damaged ({type(e).__name__})",
                              {})  # fmt: skip
        meta = getattr(ds, "file_meta", None)
        ts = meta.get("TransferSyntaxUID", "") if meta is not None else ""
        sop_class = str(
            (meta.get("MediaStorageSOPClassUID", "") if meta is not None else "") or ds.get("SOPClassUID", "")
        )
        header = {
            "modality": str(ds.get("Modality", "")),
            "photometric": str(ds.get("PhotometricInterpretation", "")).upper(),
            "transfer_syntax": pydicom.uid.UID(ts).name if ts else "Implicit VR Little Endian",
            "bits_stored": str(ds.get("BitsStored", "")),
            # to match a label table keyed by it (SIIM style) and to group a patient's files: never written or logged
            "sop_instance_uid": str(ds.get("SOPInstanceUID", "")),
            "patient_id": str(ds.get("PatientID", "")),
            "study_uid": str(ds.get("StudyInstanceUID", "")),
        }
        pixels = ds._dict.get(Tag(0x7FE00010))
        eof = any("End of file" in str(w.message) for w in caught)
        expected = _pixel_bytes_expected(ds)  # inside: a malformed value warns with its raw text
    if sop_class == _DIRECTORY_SOP_CLASS or Path(path).name.upper() == "DICOMDIR":
        return DicomProbe(NOT_AN_IMAGE, "DICOMDIR", header)
    if pixels is None:
        if eof:  # pydicom stopped at the end of the file looking for the end of the frames
            return DicomProbe(BROKEN, "truncated pixel data (the file ends inside its compressed frames)", header)
        if _is_image_class(sop_class):
            if _parse_end(ds) not in (None, size):
                return DicomProbe(BROKEN, "cut header: the file ends inside its header, before the pixel data", header)
            return DicomProbe(BROKEN, f"no pixel data, although a {_sop_class_kind(sop_class)} file", header)
        return DicomProbe(NOT_AN_IMAGE, _sop_class_kind(sop_class), header)
    length = getattr(pixels, "length", None)
    tell = getattr(pixels, "value_tell", None)
    if length is not None and tell is not None and length != 0xFFFFFFFF:  # native pixel data: a declared length
        available = size - tell
        needed = min(length, expected or length)
        if available < needed:
            return DicomProbe(BROKEN, f"truncated pixel data ({max(available, 0):,} of {needed:,} bytes)", header)
    return DicomProbe(IMAGE, "", header)


def probe_dicom(path: str | Path) -> DicomProbe:
    """What the DICOM file at ``path`` is (:class:`DicomProbe`), from its header and pixel-data length; cached per
    file version, so listing, checking and grouping read each header once."""
    st = os.stat(path)
    return _probe(str(path), st.st_mtime_ns, st.st_size)


def read_header(path: str | Path) -> dict[str, str]:
    """The technical tags that decide decoding (no pixels read), and the SOPInstanceUID that a label table may key
    images by; a file that is not a usable image raises a DataError with the cause."""
    probe = probe_dicom(path)
    if probe.kind != IMAGE:
        raise DataError(f"{Path(path).name}: {probe.what if probe.kind == BROKEN else 'holds no image: ' + probe.what}")
    return probe.header


def read_dicom(path: str | Path, decoding: DicomDecoding = DicomDecoding()) -> tuple[np.ndarray, DicomInfo]:
    """(uint8 [H,W,1] or [H,W,3] pixels, what was read) of one DICOM file; a DataError says what is wrong and what
    to do (a missing codec: :class:`MissingCodecError` with the package to install)."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import pixel_array

    where = Path(path).name  # the file's name, never its tags
    with _quiet_reading():
        try:
            ds = pydicom.dcmread(path, force=True)
        except (InvalidDicomError, OSError, ValueError, EOFError) as e:
            raise DataError(f"{where}: not a readable DICOM file ({type(e).__name__})") from None
        if "PixelData" not in ds:
            raise DataError(f"{where}: a DICOM file without pixel data (e.g. a report or structured document)")
        meta = getattr(ds, "file_meta", None)
        ts = pydicom.uid.UID(meta.get("TransferSyntaxUID", pydicom.uid.ImplicitVRLittleEndian) if meta is not None
                             else pydicom.uid.ImplicitVRLittleEndian)  # fmt: skip
        frame = _frame_index(ds, decoding.frames, where)
        try:
            arr = pixel_array(ds, index=frame) if frame is not None else ds.pixel_array
        except Exception as e:  # noqa: BLE001 - pydicom raises RuntimeError/NotImplementedError/ValueError per plugin
            hint = _CODECS.get(str(ts))
            if hint:
                raise MissingCodecError(
                    f"{where}: pixel data compressed as {ts.name}, which no installed package decodes; {hint}"
                ) from None
            raise DataError(f"{where}: cannot decode its pixel data ({ts.name}: {type(e).__name__})") from None
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
        stored = str(arr.dtype)
        if arr.ndim == 3 and photometric.startswith(("MONOCHROME", "PALETTE")):
            raise DataError(f"{where}: decoded to shape {arr.shape}, not one frame; set data.dicom.frames")
        if photometric.startswith("MONOCHROME"):
            grey, window, rng = _grey(ds, arr, decoding, frame)
            inverted = photometric == "MONOCHROME1" or str(ds.get("PresentationLUTShape", "")).upper() == "INVERSE"
            if inverted:  # after windowing, in float: no unsigned wrap-around, no inverted window
                grey = 1.0 - grey
            pixels = grey[..., None]
        else:
            pixels, window, inverted = _colour(ds, arr, photometric), "none (colour)", False
            rng = [float(pixels.min()), float(pixels.max())]
        info = DicomInfo(
            modality=str(ds.get("Modality", "")),
            photometric=photometric,
            transfer_syntax=ts.name,
            shape=list(arr.shape),
            stored_dtype=stored,
            modality_range=rng,
            window=window,
            inverted=inverted,
            channels=pixels.shape[-1],
            frame=frame,
        )
    return np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8), info
