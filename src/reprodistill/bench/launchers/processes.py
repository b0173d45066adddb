"""``--launcher processes``: a pool of ``workers`` processes on this machine; each running cell gets its own GPU ids
(``CUDA_VISIBLE_DEVICES``) and a share of the CPU threads; a cell of G > 1 GPUs runs under torchrun with a free
rendezvous port."""

from __future__ import annotations

import logging
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar, Optional

from reprodistill.bench.launchers.base import LEFT_TO_ANOTHER, CellJob, Launcher, register_launcher, visible_gpus
from reprodistill.errors import ReprodistillError

log = logging.getLogger("reprodistill")


@dataclass
class ProcessOptions:
    workers: int = field(default=1, metadata={"help": "processes: cells at once"})
    gpus: Optional[str] = field(
        default=None,
        metadata={"help": "processes: GPU ids of the pool, e.g. 0,1,2,3 (default: $CUDA_VISIBLE_DEVICES or every "
                  "GPU); repeat an id to let two cells share that GPU (0,0)"},
    )  # fmt: skip


@register_launcher("processes")
@dataclass
class ProcessLauncher(Launcher):
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

    help: ClassVar[str] = (
        "a pool of --workers subprocesses (`reprodistill cell <folder>` each), every running cell with its own GPU ids"
    )
    Options: ClassVar[type] = ProcessOptions

    @classmethod
    def create(cls, options: Any, gpus_per_cell: float, bench_dir: Path) -> Launcher:
        gpus = [g.strip() for g in options.gpus.split(",") if g.strip()] if options.gpus else None
        return cls(options.workers, int(gpus_per_cell), gpus)

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
