"""Launchers: how the cells of a bench run. A cell is a command on its folder (``python -m reprodistill cell
<folder>``), so every launcher ships a path, never a pickled object, and each cell's log lands in its folder.

- ``local`` (the default): one after another in the bench's own process (it shares one loaded FM); see
  :func:`reprodistill.bench.grid.run_bench`.
- ``processes``: a pool of ``workers`` processes on this machine; each running cell gets its own GPU ids
  (``CUDA_VISIBLE_DEVICES``) and a share of the CPU threads; a cell of G > 1 GPUs runs under torchrun with a free
  rendezvous port.

:func:`run_cells` is the part every launcher shares: cells already finished are skipped, cells a live process holds
(another bench on the same folder, another machine) or queued in a scheduler by an earlier ``--no-wait`` bench are
waited for, and a cell whose holder died is launched again.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, Optional, Protocol

from reprodistill.bench.cell import LEFT_TO_ANOTHER
from reprodistill.bench.submitted import queued_holder
from reprodistill.errors import ReprodistillError
from reprodistill.util.heartbeat_lock import HeartbeatLock

log = logging.getLogger("reprodistill")


@dataclass
class CellJob:
    """One cell to run: its folder, the command that runs it, and how to tell it finished."""

    folder: Path
    argv: list[str]
    done: Callable[[], bool]


def cell_command(folder: Path, gpus: int = 1) -> list[str]:
    """``python -m reprodistill cell <folder>``, under torchrun (a free local rendezvous port) for several GPUs."""
    if gpus > 1:
        return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={gpus}", "--rdzv-backend=c10d",
                "--rdzv-endpoint=localhost:0", "-m", "reprodistill", "cell", str(folder)]  # fmt: skip
    return [sys.executable, "-m", "reprodistill", "cell", str(folder)]


class Launcher(Protocol):
    def launch(self, jobs: list[CellJob]) -> dict[Path, int]:
        """Run the jobs; returns each folder's exit status."""
        ...


def visible_gpus() -> list[str]:
    """The GPU ids this machine offers the pool: $CUDA_VISIBLE_DEVICES if set, else every CUDA device."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - no torch / no driver: a CPU pool
        return []


@dataclass
class ProcessLauncher:
    """At most ``workers`` cells at once as subprocesses; each gets ``gpus_per_cell`` GPU ids of ``gpus`` that no
    other running cell has, and ``threads`` CPU threads (default: the CPUs divided among the workers).

    With no GPUs the cells run on CPU, ``CUDA_VISIBLE_DEVICES`` set empty.
    """

    workers: int = 1
    gpus_per_cell: int = 1
    gpus: Optional[list[str]] = None
    threads: Optional[int] = None
    poll_s: float = 0.2
    log_name: str = "cell.out"
    env: dict[str, str] = field(default_factory=dict)

    def launch(self, jobs: list[CellJob]) -> dict[Path, int]:
        gpus = list(self.gpus) if self.gpus is not None else visible_gpus()
        if gpus and len(gpus) < self.gpus_per_cell:
            raise ReprodistillError(f"--gpus-per-cell {self.gpus_per_cell} but only {len(gpus)} GPUs: {gpus}")
        slots = max(1, min(self.workers, len(gpus) // self.gpus_per_cell if gpus else self.workers))
        if slots < self.workers:
            log.info("processes: %d workers asked, %d fit on %d GPUs at %d per cell", self.workers, slots, len(gpus),
                     self.gpus_per_cell)  # fmt: skip
        threads = self.threads or max(1, (os.cpu_count() or 1) // slots)
        free, queue = list(gpus), list(jobs)
        running: dict[Path, tuple[subprocess.Popen, list[str], IO[bytes]]] = {}
        status: dict[Path, int] = {}
        while queue or running:
            while queue and len(running) < slots:
                job = queue.pop(0)
                ids = [free.pop(0) for _ in range(self.gpus_per_cell)] if gpus else []
                env = {**os.environ, **self.env, "CUDA_VISIBLE_DEVICES": ",".join(ids),
                       "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}  # fmt: skip
                job.folder.mkdir(parents=True, exist_ok=True)
                out = open(job.folder / self.log_name, "ab")
                log.info("processes: starting %s on %s", job.folder, f"GPUs {ids}" if ids else f"{threads} CPU threads")
                proc = subprocess.Popen(job.argv, env=env, stdout=out, stderr=subprocess.STDOUT)
                running[job.folder] = (proc, ids, out)
            time.sleep(self.poll_s)
            for folder, (proc, ids, log_file) in list(running.items()):
                code = proc.poll()
                if code is None:
                    continue
                log_file.close()
                free += ids
                status[folder] = code
                del running[folder]
                if code == LEFT_TO_ANOTHER:
                    log.info("processes: %s is held by another process; left to it", folder)
                elif code:
                    log.warning("processes: %s exited with %d; its log: %s", folder, code, folder / self.log_name)
        return status


def cell_holder(folder: Path) -> Optional[str]:
    """Who runs or will run the cell: a live process holding its heartbeat lock, or a scheduler job it was
    submitted as and that is still queued (:mod:`reprodistill.bench.submitted`); None when nobody."""
    return HeartbeatLock(folder).holder() or queued_holder(folder)


def run_cells(
    jobs: list[CellJob],
    launcher: Launcher,
    wait_s: float = 5.0,
    max_rounds: int = 3,
    launches: Optional[dict[Path, int]] = None,
    trained: Optional[set[Path]] = None,
) -> list[Path]:
    """Run every job that is not finished and not held by a live process, then wait for the held ones; a cell whose
    holder died without finishing is launched again (up to ``max_rounds`` launches). Returns the folders that never
    finished; ``launches`` (if given) receives how often each folder was launched here, ``trained`` the folders a
    launch here trained (exit 0; a cell process that found its cell held by another exits :data:`LEFT_TO_ANOTHER`)."""
    launches = {} if launches is None else launches
    trained = set() if trained is None else trained
    while True:
        pending = [j for j in jobs if not j.done()]
        if not pending:
            return []
        held = {j.folder: cell_holder(j.folder) for j in pending}
        free = [j for j in pending if held[j.folder] is None and launches.get(j.folder, 0) < max_rounds]
        if free:
            for j in free:
                launches[j.folder] = launches.get(j.folder, 0) + 1
            status = launcher.launch(free)
            trained.update(f for f, code in status.items() if code == 0)
            continue
        waiting = [j for j in pending if held[j.folder] is not None]
        if not waiting:  # nothing running anywhere and launches exhausted
            return [j.folder for j in pending]
        log.info("waiting for %d cells held elsewhere, e.g. %s by %s", len(waiting), waiting[0].folder,
                 held[waiting[0].folder])  # fmt: skip
        time.sleep(wait_s)
