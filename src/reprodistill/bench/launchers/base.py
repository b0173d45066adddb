"""What every launcher shares: a cell as a command on its folder (``python -m reprodistill cell <folder>``, so a
launcher ships a path, never a pickled object, and each cell's log lands in its folder), the :class:`Launcher`
interface and its registry, and :func:`run_cells`: cells already finished are skipped, cells a live process holds
(another bench on the same folder, another machine) or queued in a scheduler by an earlier ``--no-wait`` bench are
waited for, and a cell whose holder died is launched again.

A launcher is one file in this package: a :class:`Launcher` subclass registered with :func:`register_launcher`,
its own options as a dataclass (``Options``; each field becomes a ``reprodistill bench`` flag) and its checks.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional

from reprodistill.errors import ReprodistillError
from reprodistill.registry import Registry
from reprodistill.util.heartbeat_lock import HeartbeatLock

log = logging.getLogger("reprodistill")
# Exit status of `reprodistill cell` when another live process holds the cell (it trained nothing): launchers count
# only exit 0 as a cell trained here.
LEFT_TO_ANOTHER = 3
# how often run_cells repeats its "waiting for cells held elsewhere" line while the same cells stay held
WAITING_LOG_EVERY_S = 60.0


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


@dataclass
class NoLauncherOptions:
    """A launcher without options of its own."""


@dataclass
class LaunchOptions:
    """How a bench's cells run: the launcher's name, what every launcher reads, and the launcher's own options (the
    fields of its ``Options``, by name; those left out take their defaults)."""

    launcher: str = "local"
    # GPUs per cell (>1: the cell runs under torchrun where the launcher allows it); a fraction only where
    # the launcher's ``fractional_gpus`` says so
    gpus_per_cell: float = 1
    # submit the unfinished cells and return (a launcher whose ``submits`` is true); a later bench collects
    no_wait: bool = False
    options: dict[str, Any] = field(default_factory=dict)


class Launcher:
    """How the cells of a bench run. A subclass sets ``name`` (by :func:`register_launcher`), ``help`` (the CLI's
    one-line description), ``Options`` (a dataclass; each field a flag of ``reprodistill bench``: ``--<field>``, or
    ``metadata={"flag": ..., "help": ..., "choices": ...}``) and builds itself in :meth:`create`."""

    name: ClassVar[str] = ""
    help: ClassVar[str] = ""
    Options: ClassVar[type] = NoLauncherOptions
    # the bench trains the cells in its own process (sharing one loaded FM); `launch` then only serves cells whose
    # holder died
    in_process: ClassVar[bool] = False
    # --gpus-per-cell may be a fraction (cells share a GPU)
    fractional_gpus: ClassVar[bool] = False
    # a cell of G > 1 GPUs is one command under torchrun (False: the launcher starts one task per GPU itself)
    torchrun_cells: ClassVar[bool] = True

    @classmethod
    def create(cls, options: Any, gpus_per_cell: float, bench_dir: Path) -> "Launcher":
        """The launcher for one bench from its options (an instance of ``Options``)."""
        raise NotImplementedError(f"launcher {cls.name!r} does not define create()")

    @classmethod
    def submits(cls, options: Any) -> bool:
        """Whether :meth:`submit` can hand cells to something that outlives this process (``--no-wait``)."""
        return False

    @classmethod
    def check(cls, launch: LaunchOptions, options: Any) -> None:
        """Stop with what to do instead when the options do not fit this launcher."""
        g = launch.gpus_per_cell
        if g != int(g) and not cls.fractional_gpus:
            fractional = [n for n in LAUNCHERS.names() if LAUNCHERS.get(n).fractional_gpus]
            raise ReprodistillError(
                f"--gpus-per-cell {g}: a fraction of a GPU needs --launcher {' / '.join(fractional)}"
            )
        if launch.no_wait and not cls.submits(options):
            able = [n for n in LAUNCHERS.names() if LAUNCHERS.get(n).submits(LAUNCHERS.get(n).Options())]
            raise ReprodistillError(
                f"--no-wait needs --launcher {' / '.join(able)} (a scheduler that keeps the cells after this process "
                f"ends); {cls.name}'s cells stop with the bench process: run without --no-wait"
            )

    def launch(self, jobs: list[CellJob]) -> dict[Path, int]:
        """Run the jobs and wait for them; returns each folder's exit status."""
        raise NotImplementedError

    def submit(self, jobs: list[CellJob]) -> list[Any]:
        """Hand the jobs over without waiting (``--no-wait``); returns the scheduler's handles."""
        raise ReprodistillError(f"--launcher {self.name} cannot submit cells without waiting for them")


LAUNCHERS: Registry[type[Launcher]] = Registry("launcher")


def register_launcher(name: str) -> Callable[[type[Launcher]], type[Launcher]]:
    """Class decorator: register a :class:`Launcher` subclass under ``name`` and set its ``name``; its flags must
    not clash with another launcher's."""

    def wrap(cls: type[Launcher]) -> type[Launcher]:
        cls.name = name
        taken = {flag for other in LAUNCHERS.names() for flag, _ in launcher_flags(LAUNCHERS.get(other))}
        clash = [flag for flag, _ in launcher_flags(cls) if flag in taken]
        if clash:
            raise ValueError(f"launcher {name!r}: flag(s) {clash} already belong to another launcher")
        return LAUNCHERS.register(name)(cls)

    return wrap


def launcher_flags(cls: type[Launcher]) -> list[tuple[str, dataclasses.Field]]:
    """(CLI flag, option field) of each of a launcher's own options."""
    out = []
    for f in dataclasses.fields(cls.Options):
        out.append((f.metadata.get("flag", "--" + f.name.replace("_", "-")), f))
    return out


def add_launcher_arguments(parser: argparse.ArgumentParser) -> None:
    """``--launcher`` (its choices and help from the registry), each launcher's own flags and ``--no-wait``."""
    names = LAUNCHERS.names()
    parser.add_argument("--launcher", choices=names, default="local",
                        help="; ".join(f"{n}: {LAUNCHERS.get(n).help}" for n in names))  # fmt: skip
    for name in names:
        for flag, f in launcher_flags(LAUNCHERS.get(name)):
            kw: dict[str, Any] = {"dest": _dest(flag), "help": f.metadata.get("help", f"{name}: {f.name}")}
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc,operator]
            if isinstance(default, bool):
                kw["action"] = "store_true"
            elif isinstance(default, list):
                kw["action"] = "append"  # argparse's own default (None) stands for the field's
            else:
                kw["type"] = str if default is None else type(default)
            if "choices" in f.metadata:
                kw["choices"] = f.metadata["choices"]
            parser.add_argument(flag, **kw)
    parser.add_argument("--no-wait", action="store_true", help="submit the unfinished cells and return (a launcher "
                        "with a scheduler: " + ", ".join(n for n in names if LAUNCHERS.get(n).submits(
                            LAUNCHERS.get(n).Options())) + "); the same command later waits for the queued ones and "
                        "writes the report")  # fmt: skip


def launch_options(args: argparse.Namespace) -> LaunchOptions:
    """The :class:`LaunchOptions` of parsed ``reprodistill bench`` flags: the chosen launcher's own options that were
    given (the others take the defaults of its ``Options``)."""
    own = {f.name: getattr(args, _dest(flag)) for flag, f in launcher_flags(LAUNCHERS.get(args.launcher))}
    return LaunchOptions(
        args.launcher, args.gpus_per_cell, args.no_wait, {k: v for k, v in own.items() if v is not None}
    )


def _dest(flag: str) -> str:
    return "launcher_" + flag.lstrip("-").replace("-", "_")


def build_launcher(launch: LaunchOptions, bench_dir: Path) -> Launcher:
    """The registered launcher ``launch.launcher`` with its options, checked."""
    cls = LAUNCHERS.get(launch.launcher)
    known = {f.name for f in dataclasses.fields(cls.Options)}
    unknown = sorted(set(launch.options) - known)
    if unknown:
        raise ReprodistillError(f"--launcher {cls.name} has no option(s) {unknown}; its options: {sorted(known)}")
    options = cls.Options(**launch.options)
    cls.check(launch, options)
    return cls.create(options, launch.gpus_per_cell, bench_dir)


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


def cell_holder(folder: Path) -> Optional[str]:
    """Who runs or will run the cell: a live process holding its heartbeat lock, or a scheduler job it was
    submitted as and that is still queued (:mod:`reprodistill.bench.submitted`); None when nobody."""
    from reprodistill.bench.submitted import queued_holder  # torch (via util.checkpoint) only when a bench runs

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
    launch here trained (exit 0; a cell process that found its cell held by another exits
    :data:`LEFT_TO_ANOTHER`)."""
    launches = {} if launches is None else launches
    trained = set() if trained is None else trained
    said: tuple[frozenset[Path], float] = (frozenset(), -math.inf)  # what the last "waiting" line said, and when
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
        now, folders = time.monotonic(), frozenset(j.folder for j in waiting)
        # a wait can last a whole cell (many minutes): say it when the set changes, else once a minute
        if folders != said[0] or now - said[1] >= WAITING_LOG_EVERY_S:
            log.info("waiting for %d cells held elsewhere, e.g. %s by %s", len(waiting), waiting[0].folder,
                     held[waiting[0].folder])  # fmt: skip
            said = (folders, now)
        time.sleep(wait_s)
