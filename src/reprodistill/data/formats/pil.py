"""PNG / JPEG / TIFF / BMP / WebP / GIF through Pillow: 8/16-bit and float pixels with their real range, palette,
RGBA, LA and CMYK images as RGB."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np
from PIL import Image, UnidentifiedImageError

from reprodistill.data.formats.base import ImageFormat, register_format
from reprodistill.errors import DataError

log = logging.getLogger("reprodistill")


@register_format("pil")
class PillowImage(ImageFormat):
    suffixes = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"})

    @classmethod
    def problem(cls, path: Path) -> Optional[str]:
        """The header and Pillow's structural check (PNG checksums)."""
        try:
            with Image.open(path) as im:
                im.verify()
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
            return f"cannot be read ({type(e).__name__}: {str(e)[:120]})"
        return None

    @classmethod
    def decode(cls, path: Path, settings: Any) -> tuple[np.ndarray, Any]:
        try:
            with warnings.catch_warnings(record=True) as caught:  # Pillow's decompression-bomb warning: one log line
                warnings.simplefilter("always", Image.DecompressionBombWarning)
                with Image.open(path) as im:
                    arr = to_uint8(im)
            if any(issubclass(w.category, Image.DecompressionBombWarning) for w in caught):
                log.warning("%s: %dx%d pixels, very large for an image; decoding it is slow and it is resized to the "
                            "load size anyway", path.name, arr.shape[1], arr.shape[0])  # fmt: skip
            return arr, None
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
            raise DataError(
                f"{path}: cannot decode image ({e}); remove or replace the file, or set data.skip_bad_images=true"
            ) from None


def to_uint8(im: Image.Image) -> np.ndarray:
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
