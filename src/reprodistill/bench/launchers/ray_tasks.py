"""``--launcher ray``: the bench's unfinished cells as Ray tasks (``pip install -e ".[ray]"``, Ray core only), on this
machine or the cluster at ``--ray-address``. Each task asks Ray for ``num_gpus`` (fractions allowed: 0.5 puts two
cells on one GPU) and runs ``reprodistill cell <folder>`` as a subprocess with the GPU ids Ray assigned it, so only
the folder's path is shipped. The cell folders must be on storage every Ray node sees.
"""

from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional

from reprodistill.bench.launchers.base import CellJob, Launcher, register_launcher
from reprodistill.util.optional import require

log = logging.getLogger("reprodistill")


def _ray() -> Any:
    return require("ray", "--launcher ray", "ray")


def run_cell_command(argv: list[str], folder: str, threads: int) -> int:
    """Body of a Ray task: the cell's command with the GPUs Ray gave this task (Ray sets CUDA_VISIBLE_DEVICES in the
    worker) and a thread count Ray does not set (it sets OMP_NUM_THREADS=1 by default)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    ids = _ray().get_gpu_ids()
    env["CUDA_VISIBLE_DEVICES"] = ",".join(str(int(i)) if float(i).is_integer() else str(i) for i in ids)
    with open(Path(folder) / "cell.out", "ab") as out:
        return subprocess.run(argv, env=env, stdout=out, stderr=subprocess.STDOUT).returncode


@dataclass
class RayOptions:
    address: Optional[str] = field(
        default=None, metadata={"flag": "--ray-address", "help": "ray: the Ray cluster to join (default: a local Ray)"}
    )


@register_launcher("ray")
@dataclass
class RayLauncher(Launcher):
    """Every job as a Ray task needing ``num_gpus`` GPUs and ``num_cpus`` CPUs; connects to ``address`` (None: start
    or join a local Ray), or uses ``init`` arguments (tests fake GPUs with ``{'num_gpus': 2}``)."""

    num_gpus: float = 1.0
    num_cpus: float = 1.0
    address: Optional[str] = None
    init: Optional[dict[str, Any]] = None

    help: ClassVar[str] = 'Ray tasks (pip install -e ".[ray]"), --gpus-per-cell may be a fraction'
    Options: ClassVar[type] = RayOptions
    fractional_gpus: ClassVar[bool] = True

    @classmethod
    def create(cls, options: Any, gpus_per_cell: float, bench_dir: Path) -> Launcher:
        return cls(gpus_per_cell, address=options.address)

    def launch(self, jobs: list[CellJob]) -> dict[Path, int]:
        ray = _ray()
        if not ray.is_initialized():
            ray.init(address=self.address, **(self.init or {}), include_dashboard=False, log_to_driver=False)
        task = ray.remote(num_gpus=self.num_gpus, num_cpus=self.num_cpus)(run_cell_command)
        threads = max(1, int(self.num_cpus))
        refs = [task.remote(j.argv, str(j.folder), threads) for j in jobs]
        log.info("ray: %d cells submitted (%g GPUs, %g CPUs each)", len(jobs), self.num_gpus, self.num_cpus)
        codes = ray.get(refs)
        return {j.folder: int(c) for j, c in zip(jobs, codes)}
