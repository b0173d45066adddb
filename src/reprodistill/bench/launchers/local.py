"""``--launcher local`` (the default): the bench trains its cells one after another in its own process, sharing one
loaded FM (:func:`reprodistill.bench.grid.run_bench`); a cell whose holder died is run as one subprocess."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from reprodistill.bench.launchers.base import Launcher, NoLauncherOptions, register_launcher
from reprodistill.bench.launchers.processes import ProcessLauncher


@register_launcher("local")
class LocalLauncher(ProcessLauncher):
    help: ClassVar[str] = "cells one after another in this process (default)"
    Options: ClassVar[type] = NoLauncherOptions
    in_process: ClassVar[bool] = True

    @classmethod
    def create(cls, options: Any, gpus_per_cell: float, bench_dir: Path) -> Launcher:
        return cls(workers=1)
