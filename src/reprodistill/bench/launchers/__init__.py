"""Bench launchers, one file each, registered by name in :data:`LAUNCHERS` (see :mod:`.base`).

Every module of this package is imported here, so a new launcher is one new file with ``@register_launcher(name)``.
"""

import importlib
import pkgutil

from reprodistill.bench.launchers.base import (
    LAUNCHERS,
    CellJob,
    Launcher,
    LaunchOptions,
    add_launcher_arguments,
    build_launcher,
    cell_command,
    cell_holder,
    launch_options,
    launcher_flags,
    register_launcher,
    run_cells,
)

for _module in pkgutil.iter_modules(__path__):  # registration side effects: importing a launcher file registers it
    importlib.import_module(f"{__name__}.{_module.name}")

from reprodistill.bench.launchers.processes import ProcessLauncher  # noqa: E402 - after the loop above imported it

__all__ = ["LAUNCHERS", "CellJob", "LaunchOptions", "Launcher", "ProcessLauncher", "add_launcher_arguments",
           "build_launcher", "cell_command", "cell_holder", "launch_options", "launcher_flags", "register_launcher",
           "run_cells"]  # fmt: skip
