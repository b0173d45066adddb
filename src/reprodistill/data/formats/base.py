"""What an image file format declares: which files are its own (suffixes, or a look inside a file without one),
whether a file of it holds an image at all, a cheap check before training, the decode, and a summary of how its
files were decoded (for ``data.json``). Settings of a format live in their own config section (``data.<name>``)
and reach :meth:`ImageFormat.decode` as ``settings``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, ClassVar, Optional

import numpy as np

from reprodistill.registry import Registry


class ImageFormat:
    """One image file format; a subclass sets ``suffixes`` (lower case, with the dot) and implements
    :meth:`decode`. Class methods only: a format holds no state."""

    name: ClassVar[str] = ""
    suffixes: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def owns_unsuffixed(cls, path: Path) -> bool:
        """Whether a file without a suffix is of this format (e.g. DICOM's preamble); False by default."""
        return False

    @classmethod
    def not_an_image(cls, path: Path) -> Optional[str]:
        """What the file is when it is of this format but holds no image (skipped and counted wherever files are
        listed, e.g. a DICOMDIR); None for an image."""
        return None

    @classmethod
    def problem(cls, path: Path) -> Optional[str]:
        """Why the file cannot be used, found cheaply before training (None: usable)."""
        return None

    @classmethod
    def settings(cls, data_config: Any) -> Any:
        """This format's decoding settings from the run's ``DataConfig`` (None: it has none)."""
        return None

    @classmethod
    def decode(cls, path: Path, settings: Any) -> tuple[np.ndarray, Any]:
        """(uint8 [H,W] / [H,W,1|3] pixels at the file's own size, a record of how it was decoded or None); a broken
        file raises a DataError naming it."""
        raise NotImplementedError(f"image format {cls.name!r} does not define decode()")

    @classmethod
    def summary(cls, paths: list[str], settings: Any) -> dict[str, Any]:
        """How this format's files among ``paths`` decode, for data.json and export; may decode one file of each
        kind so that a missing codec stops before training. {} when there is nothing to say."""
        return {}


FORMATS: Registry[type[ImageFormat]] = Registry("image format")


def register_format(name: str) -> Callable[[type[ImageFormat]], type[ImageFormat]]:
    """Class decorator: register an :class:`ImageFormat` under ``name`` and set its ``name``; a suffix may belong to
    one format only."""

    def wrap(cls: type[ImageFormat]) -> type[ImageFormat]:
        cls.name = name
        taken = {s: f for f in FORMATS.names() for s in FORMATS.get(f).suffixes}
        clash = sorted(s for s in cls.suffixes if s in taken)
        if clash:
            raise ValueError(f"image format {name!r}: suffix(es) {clash} already belong to {taken[clash[0]]!r}")
        return FORMATS.register(name)(cls)

    return wrap


def format_of(path: Path) -> Optional[type[ImageFormat]]:
    """The format a file is in by its suffix (or, without one, by what a format finds inside it); None if none."""
    suffix = path.suffix.lower()
    for name in FORMATS.names():
        fmt = FORMATS.get(name)
        if suffix in fmt.suffixes or (suffix == "" and fmt.owns_unsuffixed(path)):
            return fmt
    return None
