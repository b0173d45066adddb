"""Run the bench grid: one cell per (method, data fraction, seed), each an ordinary run folder.

Cells share everything else (student, epochs, optimiser, data splits, teacher and its feature cache), so the
comparison is like for like. A cell is done when its ``result.json`` exists; rerunning the same bench skips done
cells and resumes a half-trained one from its ``last.pt`` (the run folder's own automatic resume).
"""

from __future__ import annotations

import copy
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from reprodistill.bench.cell import run_cell, write_cell_config
from reprodistill.bench.launchers import (
    LAUNCHERS,
    CellJob,
    Launcher,
    LaunchOptions,
    ProcessLauncher,
    build_launcher,
    cell_command,
    cell_holder,
    run_cells,
)
from reprodistill.bench.rows import RESULT_COLUMNS, BenchRow, read_row
from reprodistill.config import (
    BenchConfig,
    RunConfig,
    apply_variant_sections,
    expand_budgets,
    method_variant,
    to_dict,
)
from reprodistill.engine import distributed
from reprodistill.engine.co_teacher import CELL_PREFIX
from reprodistill.engine.environment import setup_logging
from reprodistill.engine.run import retest_run
from reprodistill.engine.run_dir import MethodDir, RunDir
from reprodistill.errors import ConfigError, ReprodistillError
from reprodistill.features.run_features import build_teacher
from reprodistill.methods import METHODS, check_config
from reprodistill.models.teacher import Teacher
from reprodistill.util.checkpoint import write_csv, write_text

log = logging.getLogger("reprodistill")


@dataclass(frozen=True)
class Cell:
    method: str  # a registered method or a bench variant of one
    fraction: float
    seed: int
    base: str = ""  # the registered method that trains (= method unless a variant)

    @property
    def folder(self) -> str:
        return f"{self.method}/frac{self.fraction:g}-seed{self.seed}"

    def result_path(self, bench_dir: Path) -> Path:
        return self.method_dir(bench_dir).result

    def method_dir(self, bench_dir: Path) -> MethodDir:
        """The folder of the cell's trained method (its result.json, best.pt, ...)."""
        return RunDir(bench_dir / "cells" / self.folder).method(self.base)


@dataclass
class BenchResult:
    bench_dir: Path
    rows: list[BenchRow] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)  # the rows in the report's order (a budget axis expanded)
    wall_time_s: float = 0.0
    cells_run: int = 0
    cells_kept: int = 0
    cells_collected: int = 0  # finished while this bench waited, by the other process or job that held them
    cells_pending: int = 0  # --no-wait: cells submitted or still queued / running; no report until they finish


def bench_cells(cfg: RunConfig) -> list[Cell]:
    """Every (method, fraction, seed) of the grid, largest fraction first, then seeds, then methods (a row whose
    options name another row's cell, ``cell:<row>``, after that row)."""
    fractions = sorted(cfg.bench.fractions, reverse=True)
    base = {m: method_variant(cfg, m)[0] for m in cfg.methods}
    methods = _cells_first(cfg)
    return [Cell(m, f, s, base[m]) for f in fractions for s in cfg.bench.seeds for m in methods]


def _named_row(value: Any) -> Optional[str]:
    """The row an option value ``cell:<row>`` names, else None."""
    return value[len(CELL_PREFIX) :] if isinstance(value, str) and value.startswith(CELL_PREFIX) else None


def _cell_refs(cfg: RunConfig, method: str) -> list[str]:
    """The rows whose cells ``method``'s options name (``cell:<row>``)."""
    values = [x for v in method_variant(cfg, method)[1].values() for x in (v if isinstance(v, list) else [v])]
    return [row for row in map(_named_row, values) if row is not None]


def _cells_first(cfg: RunConfig) -> list[str]:
    """``cfg.methods`` with every row after the rows it names, else in their order; a named row missing from the
    bench, or a cycle, stops here."""
    ordered: list[str] = []
    todo = list(cfg.methods)
    while todo:
        ready = [m for m in todo if all(r in ordered for r in _cell_refs(cfg, m))]
        if not ready:
            m = todo[0]
            missing = [r for r in _cell_refs(cfg, m) if r not in cfg.methods]
            raise ConfigError(
                f"bench row {m} names cell:{(missing or _cell_refs(cfg, m))[0]}, "
                + ("which is not a row of this bench: add it to methods (a budget row reads <method>@<steps>)"
                   if missing else "and the rows name each other in a cycle")
            )  # fmt: skip
        ordered.append(ready[0])
        todo.remove(ready[0])
    return ordered


def _named_cells(cfg: RunConfig, cell: Cell) -> list[Cell]:
    """The cells ``cell``'s options name (``cell:<row>``): those rows' cells of its fraction and seed."""
    return [Cell(row, cell.fraction, cell.seed, method_variant(cfg, row)[0]) for row in _cell_refs(cfg, cell.method)]


def cell_waves(cfg: RunConfig, cells: list[Cell]) -> list[list[Cell]]:
    """``cells`` in waves: a row's cells one wave after the last of the rows it names (``cell:<row>``), so that a
    launcher running cells in parallel never starts a cell before the cells it reads have finished."""
    depth: dict[str, int] = {}
    for m in _cells_first(cfg):  # the rows a row names come before it
        depth[m] = 1 + max((depth[r] for r in _cell_refs(cfg, m)), default=-1)
    waves: list[list[Cell]] = [[] for _ in range(1 + max(depth.values(), default=-1))]
    for c in cells:
        waves[depth[c.method]].append(c)
    return [w for w in waves if w]


def check_named_weights(cfg: RunConfig, cells: list[Cell], bench_dir: Path) -> None:
    """Stop before training anything where an unfinished cell reads a finished cell (``cell:<row>``) whose
    ``best.pt`` is not on this machine (results are committed without weights), naming the cells to train again."""
    unweighted = sorted(
        {n for c in cells if not c.result_path(bench_dir).is_file() for n in _named_cells(cfg, c)
         if n.result_path(bench_dir).is_file() and not n.method_dir(bench_dir).best.is_file()},
        key=lambda n: (n.method, n.fraction, n.seed),
    )  # fmt: skip
    if unweighted:
        listed = "\n  ".join(str(n.result_path(bench_dir)) for n in unweighted)
        raise ReprodistillError(
            f"{len(unweighted)} finished cells that other rows of this bench distil (cell:<row>) have no best.pt on "
            "this machine (weights are never committed with the results). Train them again: delete their "
            f"result.json and rerun the same command (the figures of a retrained cell may move slightly), or run the "
            f"bench on the machine that trained them:\n  {listed}"
        )


def cell_config(cfg: RunConfig, cell: Cell) -> RunConfig:
    """The run config of one cell: the bench config with one method (a variant resolved to its method and merged
    options), its fraction and seed, and no grid. An option ``cell:<row>`` stays as written: the cell's run resolves
    it against its own folder (:func:`reprodistill.engine.co_teacher.resolve_co_teacher`)."""
    c = apply_variant_sections(copy.deepcopy(cfg), cell.method)
    base, options = method_variant(cfg, cell.method)
    c.methods = [base]
    c.method_options = {base: options} if options else {}
    c.data.fraction = cell.fraction
    c.train.seed = cell.seed
    if cell.fraction < 1.0 or c.data.k_per_class is not None:  # seeds also differ in which images a subset holds
        c.data.subset_seed = cfg.data.split_seed + cell.seed
    c.bench = BenchConfig()  # so that growing the grid later never invalidates finished cells
    c.name = f"{cfg.name or 'bench'}-{cell.method}-frac{cell.fraction:g}-seed{cell.seed}"
    return c


def default_bench_dir(cfg: RunConfig) -> Path:
    """Stable (not time-stamped) so that rerunning the same command finds and resumes the grid."""
    return Path(cfg.out_dir) / f"bench-{cfg.name or 'run'}"


def write_results_csv(path: Path, rows: list[BenchRow]) -> None:
    write_csv(path, [r.csv_row() for r in rows], RESULT_COLUMNS)


def run_bench(
    cfg: RunConfig,
    bench_dir: Optional[Path] = None,
    plots: bool = True,
    retest: bool = False,
    launch: LaunchOptions = LaunchOptions(),
) -> BenchResult:
    """Run (or finish) the grid of ``cfg`` and write ``results.csv``, ``report.md`` and ``plots/`` in ``bench_dir``.

    With ``retest`` a finished cell's stored checkpoints are tested again with the current evaluation code
    (:func:`reprodistill.engine.run.retest_run`) instead of keeping its stored result. Each cell is locked while it
    trains (a heartbeat lock in its folder), not the bench: two benches on one folder, or on several machines, share
    the cells, each trained once, and the report is assembled from the cell folders. A budget axis
    (``bench.steps``) becomes one row per method and budget (:func:`~reprodistill.config.expand_budgets`)."""
    cfg = expand_budgets(cfg)
    check_config(cfg)
    bench_dir = Path(bench_dir) if bench_dir else default_bench_dir(cfg)
    LAUNCHERS.get(launch.launcher)  # an unknown name stops here, listing the registered ones
    return _run_bench(cfg, bench_dir, plots, retest, launch)


def _run_jobs(jobs: list[CellJob], launcher: Launcher) -> int:
    """Run the cells' commands until every one finished (:func:`run_cells`); stop naming one that did not. Returns
    how many this bench trained (the others were finished by whoever held them, a launch that found its cell held
    included)."""
    trained: set[Path] = set()
    failed = run_cells(jobs, launcher, trained=trained)
    if failed:
        raise ReprodistillError(f"{len(failed)} cells did not finish, e.g. {failed[0]} (its log: cell.out, log.txt)")
    return len(trained)


def _run_processes(cfg: RunConfig, cells: list[Cell], bench_dir: Path, launch: LaunchOptions, res: BenchResult) -> None:
    """Every unfinished cell as its own process (a pool, or scheduler tasks), from its folder, counted in ``res``;
    a cell that reads other cells (``cell:<row>``) only once they finished (:func:`cell_waves`). With ``no_wait`` the
    cells nobody runs yet whose named cells are finished are submitted, and the unfinished ones counted as pending."""
    launcher = build_launcher(launch, bench_dir)
    # GPUs one cell's command spreads over with torchrun (a launcher may start one task per GPU itself instead)
    command_gpus = int(launch.gpus_per_cell) if launcher.torchrun_cells else 1

    def job(cell: Cell) -> CellJob:
        folder = bench_dir / "cells" / cell.folder
        write_cell_config(folder, cell_config(cfg, cell))
        return CellJob(folder, cell_command(folder, command_gpus), cell.result_path(bench_dir).is_file)

    todo = [c for c in cells if not c.result_path(bench_dir).is_file()]
    res.cells_kept = len(cells) - len(todo)
    if launch.no_wait:
        ready = [c for c in todo if all(n.result_path(bench_dir).is_file() for n in _named_cells(cfg, c))]
        free = [j for j in map(job, ready) if cell_holder(j.folder) is None]  # not running, not queued from before
        if free:
            launcher.submit(free)
        res.cells_pending = len(todo)
        return
    for wave in cell_waves(cfg, todo):
        jobs = [job(c) for c in wave]
        trained = _run_jobs(jobs, launcher)
        res.cells_run += trained
        res.cells_collected += len(jobs) - trained


def _run_here(cfg: RunConfig, cells: list[Cell], bench_dir: Path, retest: bool, res: BenchResult) -> None:
    """The local launcher: every cell in this process, one after another, sharing one loaded FM; cells another
    bench holds are waited for (and trained here if their holder dies)."""
    main = distributed.is_main()
    teacher: Optional[Teacher] = None
    held: list[Cell] = []
    for i, cell in enumerate(cells, 1):
        cell_dir = bench_dir / "cells" / cell.folder
        done = cell.result_path(bench_dir)
        if done.is_file() and not retest:
            res.cells_kept += 1
            continue
        what = "re-testing" if done.is_file() else "training"
        log.info("bench cell %d/%d (%s): %s, fraction %g, seed %d", i, len(cells), what, cell.method, cell.fraction,
                 cell.seed)  # fmt: skip
        if teacher is None and METHODS.get(cell.base).uses_teacher:
            from reprodistill.engine.loop import resolve_device

            teacher = build_teacher(cfg, resolve_device(cfg.train.device))
        if done.is_file():
            retest_run(cell_dir, teacher=teacher)
            res.cells_kept += 1
        else:
            waiting = [n for n in held if n in _named_cells(cfg, cell)]
            if waiting:  # the cells it reads are trained by another bench: wait for them (or train them) first
                _collect_held(waiting, bench_dir, res)
                held = [n for n in held if n not in waiting]
            c = cell_config(cfg, cell)
            if main:
                write_cell_config(cell_dir, c)
            if run_cell(cell_dir, teacher=teacher, cfg=c):
                res.cells_run += 1
            else:  # another bench (process or machine) holds it: collected below
                held.append(cell)
        setup_logging(bench_dir)  # the cell's run pointed the log at its own folder
    _collect_held(held, bench_dir, res)


def _collect_held(held: list[Cell], bench_dir: Path, res: BenchResult) -> None:
    """Wait for cells another bench holds, training any whose holder dies; counted in ``res``."""
    folders = [bench_dir / "cells" / c.folder for c in held]
    trained = _run_jobs([CellJob(f, cell_command(f), c.result_path(bench_dir).is_file) for f, c in zip(folders, held)],
                        ProcessLauncher(1))  # fmt: skip
    res.cells_run += trained
    res.cells_collected += len(held) - trained


def _run_bench(cfg: RunConfig, bench_dir: Path, plots: bool, retest: bool, launch: LaunchOptions) -> BenchResult:
    from reprodistill.bench.report import write_report  # matplotlib is imported only when a report is written

    t0 = time.perf_counter()
    main = distributed.is_main()  # under torchrun every rank trains each cell; rank 0 writes the bench files
    if main:
        bench_dir.mkdir(parents=True, exist_ok=True)
        write_text(bench_dir / "bench.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
    distributed.barrier()
    setup_logging(bench_dir)
    cells = bench_cells(cfg)
    check_named_weights(cfg, cells, bench_dir)
    res = BenchResult(bench_dir, methods=list(cfg.methods))
    log.info(
        "bench %s: %d cells (%d methods x %d fractions x %d seeds)",
        bench_dir,
        len(cells),
        len(cfg.methods),
        len(cfg.bench.fractions),
        len(cfg.bench.seeds),
    )
    if not LAUNCHERS.get(launch.launcher).in_process and not retest:
        _run_processes(cfg, cells, bench_dir, launch, res)
        if res.cells_pending:
            log.info("bench: %d cells submitted or still queued; %d finished. Run the same command again to collect "
                     "the report (it waits for the queued cells)", res.cells_pending, res.cells_kept)  # fmt: skip
            return res
    else:
        _run_here(cfg, cells, bench_dir, retest, res)
    # the report is assembled from the cell folders, whichever process trained them
    res.rows = [read_row(c.method, c.fraction, c.seed, c.base, c.result_path(bench_dir).parent) for c in cells]
    res.wall_time_s = time.perf_counter() - t0
    if not main:
        return res
    write_results_csv(bench_dir / "results.csv", res.rows)
    if plots:
        command = " ".join(["reprodistill", *sys.argv[1:]]) if Path(sys.argv[0]).name == "reprodistill" else None
        write_report(bench_dir, cfg, res.rows, res.wall_time_s, res.cells_run, command)
    log.info("bench: %d cells trained, %d %s from before, %d collected from other processes; %.0f s", res.cells_run,
             res.cells_kept, "re-tested" if retest else "kept", res.cells_collected, res.wall_time_s)  # fmt: skip
    return res
