"""DICOM (``.dcm``, ``.dicom``, or no suffix with the 'DICM' preamble), decoded by :mod:`reprodistill.data.dicom`
with the run's ``data.dicom`` settings (window, frames); files that hold no image (a DICOMDIR, reports, presentation
states) are skipped and counted."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Optional

import numpy as np

from reprodistill.data.dicom import (
    DICOM_SUFFIXES,
    IMAGE,
    NOT_AN_IMAGE,
    DicomDecoding,
    is_dicom,
    probe_dicom,
    read_dicom,
    read_header,
)
from reprodistill.data.formats.base import ImageFormat, register_format


@register_format("dicom")
class DicomImage(ImageFormat):
    suffixes = frozenset(DICOM_SUFFIXES)

    @classmethod
    def owns_unsuffixed(cls, path: Path) -> bool:
        return is_dicom(path)

    @classmethod
    def not_an_image(cls, path: Path) -> Optional[str]:
        probe = probe_dicom(path)
        return probe.what if probe.kind == NOT_AN_IMAGE else None

    @classmethod
    def problem(cls, path: Path) -> Optional[str]:
        """Its header and the length of its pixel data (:func:`~reprodistill.data.dicom.probe_dicom`)."""
        probe = probe_dicom(path)
        if probe.kind == IMAGE:
            return None
        return probe.what if probe.kind != NOT_AN_IMAGE else f"holds no image ({probe.what})"

    @classmethod
    def settings(cls, data_config: Any) -> DicomDecoding:
        return DicomDecoding(data_config.dicom.window, data_config.dicom.frames)

    @classmethod
    def decode(cls, path: Path, settings: Any) -> tuple[np.ndarray, Any]:
        return read_dicom(path, settings if settings is not None else DicomDecoding())

    @classmethod
    def summary(cls, paths: list[str], settings: Any) -> dict[str, Any]:
        """Counts per modality, photometric interpretation and transfer syntax (technical tags only). Every header is
        read, and one file of each (transfer syntax, photometric interpretation, bit depth) is decoded in full, so a
        codec that is missing or fails on that kind of file stops here, before any training, with what to install or
        change."""
        decoding = settings if settings is not None else DicomDecoding()
        seen: dict[str, Counter] = {k: Counter() for k in ("modality", "photometric", "transfer_syntax")}
        probes: dict[tuple[str, str, str], str] = {}
        for p in paths:
            h = read_header(p)
            for k in seen:
                seen[k][h[k]] += 1
            probes.setdefault((h["transfer_syntax"], h["photometric"], h["bits_stored"]), p)
        windows = Counter(read_dicom(p, decoding)[1].window.split(" ", 1)[-1] for p in probes.values())
        return {
            "files": len(paths),
            "decoding": {"window": decoding.window, "frames": decoding.frames},
            **{k: dict(v) for k, v in seen.items()},
            "windows_of_probed_files": dict(windows),
        }
