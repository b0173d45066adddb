"""Optional dependencies: import one, or stop with the extra that installs it."""

from __future__ import annotations

import importlib
from typing import Any

from reprodistill.errors import ReprodistillError


def require(module: str, needed_by: str, extra: str, error: type[ReprodistillError] = ReprodistillError) -> Any:
    """``import module``; if it is not installed, raise ``error`` naming who needs it and the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise error(
            f"{needed_by} needs the {module!r} package: pip install 'reprodistill[{extra}]' (in a checkout: "
            f'pip install -e ".[{extra}]")'
        ) from None
