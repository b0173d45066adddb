"""What a run records about where it ran (env.json), and where it logs."""

from __future__ import annotations

import logging
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import torch

from reprodistill import __version__
from reprodistill.config import RunConfig
from reprodistill.engine import distributed

_PACKAGE_DIR = Path(__file__).resolve().parent.parent


def _git(directory: Path, *args: str) -> Optional[str]:
    """``git args`` run in ``directory``: its stdout, or None where git or a checkout is missing."""
    try:
        done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5, cwd=directory)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def read_code_state(directory: Path) -> tuple[Optional[str], Optional[bool]]:
    """(commit, whether tracked files under ``directory`` differ from it), or (None, None) outside a git checkout.
    Only ``directory`` counts: a bench rewriting its own tracked report does not make the code it ran modified."""
    sha = (_git(directory, "rev-parse", "HEAD") or "").strip() or None
    if sha is None:
        return None, None
    status = _git(directory, "status", "--porcelain", "--untracked-files=no", "--", ".")
    return sha, None if status is None else bool(status.strip())


# Read once, when the code is imported: a long bench whose checkout moves on (a commit mid-run) keeps running the
# code it imported, so that is the commit its cells must record; an uncommitted edit of the package at that moment is
# recorded beside it (code_modified), since the commit alone would then name code that did not run.
_GIT_SHA, _CODE_MODIFIED = read_code_state(_PACKAGE_DIR)


def git_sha() -> Optional[str]:
    """The commit of this checkout of reprodistill when this process imported it, or None outside a git checkout."""
    return _GIT_SHA


def code_modified() -> Optional[bool]:
    """Whether the package's tracked files differed from :func:`git_sha` when this process imported it (None outside
    a git checkout)."""
    return _CODE_MODIFIED


def environment(cfg: RunConfig) -> dict[str, Any]:
    """Versions, platform, threads, seed and process count: the env.json of a run."""
    import numpy
    import timm

    return {
        "reprodistill": __version__,
        "git_sha": git_sha(),
        "code_modified": code_modified(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
        "seed": cfg.train.seed,
        "world_size": distributed.world_size(),
    }


def setup_logging(run_dir: Path) -> None:
    """Log to stderr (INFO) and always to run_dir/log.txt; under torchrun other ranks than 0 log warnings only."""
    logger = logging.getLogger("reprodistill")
    main = distributed.is_main()
    logger.setLevel(logging.INFO if main else logging.WARNING)
    for h in list(logger.handlers):
        if getattr(h, "_reprodistill", False):
            logger.removeHandler(h)
            h.close()
    prefix = "" if main else f"[rank {distributed.rank()}] "
    fmt = logging.Formatter(f"%(asctime)s %(levelname)s {prefix}%(message)s", "%H:%M:%S")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if main:
        handlers.append(logging.FileHandler(run_dir / "log.txt"))
    for h in handlers:
        h.setFormatter(fmt)
        h._reprodistill = True  # type: ignore[attr-defined]
        logger.addHandler(h)
    logger.propagate = False


def log_to_file(level: int, message: str) -> None:
    """Write ``message`` to the run's log.txt only (the file handlers of :func:`setup_logging`), e.g. the error that
    stops a run, which the command line prints on stderr itself."""
    logger = logging.getLogger("reprodistill")
    record = logger.makeRecord(logger.name, level, __file__, 0, message, (), None)
    for h in logger.handlers:
        if isinstance(h, logging.FileHandler):
            h.handle(record)
