"""A bench cell as a command: ``reprodistill cell <cell folder>`` trains the cell from the ``cell.yaml`` its bench
wrote into the folder, holding the cell's heartbeat lock, so any launcher (a process pool, SLURM, Ray) ships a path
and the cell's log lands in its folder. A cell that another live process holds is left to it."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

import yaml

from reprodistill.bench.launchers.base import LEFT_TO_ANOTHER
from reprodistill.config import RunConfig, from_dict, to_dict
from reprodistill.errors import ReprodistillError
from reprodistill.models.teacher import Teacher
from reprodistill.util.checkpoint import write_text
from reprodistill.util.heartbeat_lock import HeartbeatLock

__all__ = ["LEFT_TO_ANOTHER", "run_cell", "write_cell_config"]

log = logging.getLogger("reprodistill")
CELL_CONFIG = "cell.yaml"


def write_cell_config(cell_dir: Path, cfg: RunConfig) -> None:
    """The cell's resolved config, which ``reprodistill cell`` runs (atomically; the same text every time)."""
    write_text(Path(cell_dir) / CELL_CONFIG, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def read_cell_config(cell_dir: Path) -> RunConfig:
    path = Path(cell_dir) / CELL_CONFIG
    if not path.is_file():
        raise ReprodistillError(f"{cell_dir}: no {CELL_CONFIG}; a bench writes it when it plans its cells")
    return from_dict(RunConfig, yaml.safe_load(path.read_text()))


def run_cell(cell_dir: Path, teacher: Optional[Teacher] = None, cfg: Optional[RunConfig] = None) -> bool:
    """Train (or resume, or keep) one cell under its heartbeat lock; False when a live process holds it.

    Under torchrun only rank 0 takes the lock (the ranks of one cell are one holder)."""
    from reprodistill.engine.run import run
    from reprodistill.methods import check_config

    cell_dir = Path(cell_dir)
    cfg = check_config(cfg or read_cell_config(cell_dir))
    if os.environ.get("RANK", "0") != "0":
        run(cfg, run_dir=cell_dir, teacher=teacher)
        return True
    lock = HeartbeatLock(cell_dir)
    if not lock.acquire():
        log.info("cell %s is held by %s; left to it", cell_dir, lock.holder() or "another process")
        return False
    try:
        run(cfg, run_dir=cell_dir, teacher=teacher)
    finally:
        lock.release()
    return True
