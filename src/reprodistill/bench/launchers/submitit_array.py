"""``--launcher submitit``: the bench's unfinished cells as one SLURM job array (``pip install -e ".[slurm]"``).

Each array task runs one cell in its own process from the cell's folder (the pickled callable holds the folder's
path only). The time limit, partition, GPUs per cell and setup lines are options, with an explicit default time
limit (submitit's own is a few minutes). A preempted or timed-out task is requeued by submitit (the callable is
``Checkpointable``); the requeued task takes the cell's heartbeat lock over (same SLURM job, new restart count) and
the run resumes from the cell's ``last.pt``. ``cluster='debug'`` (in this process) and ``'local'`` (subprocesses)
run the same callables without SLURM, for tests and for trying a bench out.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional

from reprodistill.bench.launchers.base import LEFT_TO_ANOTHER, CellJob, Launcher, register_launcher
from reprodistill.util.optional import require

log = logging.getLogger("reprodistill")


def _submitit() -> Any:
    return require("submitit", "--launcher submitit", "slurm")


try:  # the optional extra: without it the class is plain and the launcher says what to install
    from submitit.helpers import Checkpointable as _Requeueable
except ImportError:  # pragma: no cover - exercised where submitit is absent
    _Requeueable = object  # type: ignore[misc,assignment]


class CellTask(_Requeueable):  # type: ignore[misc]
    """The callable a SLURM task runs: one cell, from its folder (the only state it carries). Requeued as itself on
    preemption or time-out."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def __call__(self) -> bool:
        from reprodistill.bench.cell import run_cell
        from reprodistill.engine.environment import setup_logging

        if int(os.environ.get("SLURM_NTASKS", "1")) > 1:  # one task per GPU: torch.distributed from SLURM's env
            _submitit().helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        setup_logging(self.folder)
        return run_cell(self.folder)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit calls this on preemption / time-out: run the same cell again (it resumes from last.pt)."""
        log.info("cell %s: preempted or out of time; requeued, it resumes from its last.pt", self.folder)
        return _submitit().helpers.DelayedSubmission(CellTask(self.folder))


@dataclass
class SubmititOptions:
    cluster: str = field(
        default="auto",
        metadata={"flag": "--submitit-cluster", "choices": ["auto", "slurm", "local", "debug"],
                  "help": "submitit: auto = SLURM when present; local / debug run without SLURM"},
    )  # fmt: skip
    timeout_min: int = field(default=120, metadata={"flag": "--slurm-time", "help": "submitit: time limit per cell, "
                                                     "minutes"})  # fmt: skip
    partition: Optional[str] = field(default=None, metadata={"flag": "--slurm-partition",
                                                               "help": "submitit: the SLURM partition"})  # fmt: skip
    setup: list[str] = field(
        default_factory=list,
        metadata={"flag": "--slurm-setup", "help": "submitit: a shell line run before each cell (repeatable), e.g. "
                  "'source .venv/bin/activate'"},
    )  # fmt: skip


@register_launcher("submitit")
@dataclass
class SubmititLauncher(Launcher):
    """One submitit job array over the cells (``cluster``: None = SLURM when present, else local; 'debug', 'local',
    'slurm')."""

    help: ClassVar[str] = (
        'one SLURM job array (pip install -e ".[slurm]"), preempted cells requeued and resumed; --no-wait submits '
        "and returns"
    )
    Options: ClassVar[type] = SubmititOptions
    torchrun_cells: ClassVar[bool] = False  # a cell of G GPUs is G SLURM tasks (torch.distributed from SLURM's env)

    folder: Path
    cluster: Optional[str] = None
    timeout_min: int = 120
    partition: Optional[str] = None
    gpus_per_cell: int = 1
    cpus_per_cell: Optional[int] = None
    setup: list[str] = field(default_factory=list)
    array_parallelism: int = 256
    max_requeues: int = 3

    def executor(self) -> Any:
        submitit = _submitit()
        ex = submitit.AutoExecutor(
            folder=self.folder / "%j", cluster=self.cluster, slurm_max_num_timeout=self.max_requeues
        )
        params: dict[str, Any] = {"timeout_min": self.timeout_min, "slurm_array_parallelism": self.array_parallelism}
        if self.gpus_per_cell:
            params |= {"gpus_per_node": self.gpus_per_cell, "tasks_per_node": self.gpus_per_cell}
        if self.cpus_per_cell:
            params["cpus_per_task"] = self.cpus_per_cell
        if self.partition:
            params["slurm_partition"] = self.partition
        if self.setup:
            params["slurm_setup"] = list(self.setup)
        ex.update_parameters(**params)
        return ex

    @classmethod
    def create(cls, options: Any, gpus_per_cell: float, bench_dir: Path) -> Launcher:
        cluster = None if options.cluster == "auto" else options.cluster
        return cls(bench_dir / "submitit", cluster, options.timeout_min, options.partition, int(gpus_per_cell),
                   setup=list(options.setup))  # fmt: skip

    @classmethod
    def submits(cls, options: Any) -> bool:
        return options.cluster != "debug"  # the debug executor runs the cells in this process

    def submit(self, jobs: list[CellJob]) -> list[Any]:
        """Submit the cells (one job array) without waiting; each cell's folder gets its submitted record, so a
        later bench waits for a queued cell instead of submitting it again. Returns submitit's jobs."""
        from reprodistill.bench.submitted import write_record  # torch (via util.checkpoint) only when submitting

        ex = self.executor()
        with ex.batch():
            submitted = [ex.submit(CellTask(j.folder)) for j in jobs]
        for job, sub in zip(jobs, submitted):
            write_record(job.folder, ex.cluster, str(sub.job_id), Path(sub.paths.folder))
        log.info(
            "submitit: %d cells submitted as %s", len(jobs), submitted[0].job_id.split("_")[0] if submitted else "-"
        )
        return submitted

    def launch(self, jobs: list[CellJob]) -> dict[Path, int]:
        submitted = self.submit(jobs)
        status: dict[Path, int] = {}
        for job, sub in zip(jobs, submitted):
            try:
                status[job.folder] = 0 if sub.result() is not False else LEFT_TO_ANOTHER
            except Exception as e:  # noqa: BLE001 - a failed task is reported, the others still collected
                log.warning(
                    "submitit: cell %s failed (%s); its logs: %s", job.folder, type(e).__name__, sub.paths.folder
                )
                status[job.folder] = 1
        return status
