"""Atomic file writes (text, JSON, CSV) and weights-only checkpoints."""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import torch

from reprodistill.errors import ReprodistillError, WeightsError


def atomic_write(path: str | Path, write) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``, so a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        # mkstemp creates 0600; give the file the mode a plain open() would (0666 minus the umask), so a shared
        # cache or bench folder stays readable to the group as the user's umask intends
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ReprodistillError(
                f"disk full while writing {path}; the previous version of the file is untouched. "
                f"Free space on {path.parent} and rerun the same command to resume."
            ) from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda p: Path(p).write_text(text))


def write_csv(path: str | Path, rows: Iterable[dict[str, Any]], columns: Optional[Sequence[str]] = None) -> None:
    """Rows as CSV with a header, atomically; ``columns`` default to every key in order of first appearance."""
    rows = list(rows)
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns))
    w.writeheader()
    w.writerows(rows)
    write_text(path, buf.getvalue())


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, default=float) + "\n")


def read_json(path: str | Path) -> Any:
    """Parse a JSON file written by :func:`write_json`; a damaged one is named with what to do."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:  # e.g. a finished bench cell's folder moved away while the bench ran
        raise ReprodistillError(f"{path} is missing (removed after it was written); rerun the command") from None
    except (OSError, ValueError) as e:
        raise ReprodistillError(f"{path} is unreadable ({e}); delete it to redo that step") from None


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """torch.save of tensors, numbers, strings and containers only (loadable with weights_only=True)."""
    atomic_write(path, lambda p: torch.save(state, p))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`, refusing anything that needs pickled code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"checkpoint {path} does not exist") from None
    except Exception as e:  # noqa: BLE001
        raise WeightsError(f"{path}: {load_failure(e)}; retrain or re-export to write it again") from None


def load_failure(e: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` failed, in words that never suggest unsafe loading.

    torch's own message for any foreign file advises ``weights_only=False``, i.e. running pickled code from the file.
    """
    if "Unsupported global" in str(e):  # a real pickle that names code to import
        return "it holds pickled objects beyond tensors and numbers, which are refused for safety"
    return "not a valid checkpoint file (damaged, truncated, or not a PyTorch/safetensors file)"
