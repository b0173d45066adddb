"""The bench's typed rows: one :class:`BenchRow` per cell, read once from the cell's folder, and every other read of
a cell folder the report needs (class counts, training history, test extras, the commits a cell trained at)."""

from __future__ import annotations

import csv
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from reprodistill.engine.results import RESULT_COLUMNS as RUN_COLUMNS
from reprodistill.engine.results import MethodResult
from reprodistill.engine.run_dir import MethodDir, RunDir
from reprodistill.methods import METHODS
from reprodistill.util.checkpoint import read_json
from reprodistill.util.metrics import SCALAR_METRICS

# results.csv: the run's result columns, with the cell's fraction and seed after the method, what it deploys and its
# folder last
RESULT_COLUMNS = (
    "method",
    "fraction",
    "seed",
    *RUN_COLUMNS[1:],
    "deploys",
    "method_dir",  # the trained method's folder inside the cell's run folder (metrics.csv, test_metrics.json, ...)
)
# short names of the test metrics in tables and plots
METRIC_NAMES = {"accuracy": "acc", "balanced_accuracy": "bal. acc", "macro_f1": "macro-F1", "auc": "AUC"}
# the numeric columns a row carries besides its metrics (rounded as results.csv stores them)
COST_COLUMNS = ("best_epoch", "train_time_s", "fm_feature_s", "prepare_s", "transfer_s", "params", "gflops",
                "latency_ms", "peak_rss_mb")  # fmt: skip


def budget_of(row: str) -> Optional[tuple[str, int]]:
    """(the row's name without its budget, steps) of a budget-axis row name ``<name>@<steps>``, else None."""
    name, _, steps = row.rpartition("@")
    return (name, int(steps)) if name and steps.isdigit() else None


@dataclass(frozen=True)
class BenchRow:
    """One cell of a bench: a method (or variant, or ``<method>@<steps>``) at a fraction and seed.

    Attributes:
        method: The row's name in the bench.
        fraction: Training fraction of the cell.
        seed: Its seed.
        family: What the verdict takes the row for, from the method class (:attr:`Method.family`): ``transfer``
            (reprodistill's reprogramming methods), ``kd`` (the KD baselines) or ``alternative``.
        deploys: ``student`` or ``FM``.
        test: Test metrics of the deployed model (:data:`SCALAR_METRICS`).
        val: Validation metrics of the reported checkpoint (``loss`` and :data:`SCALAR_METRICS`; NaN if missing).
        costs: :data:`COST_COLUMNS` as results.csv stores them (seconds, params, GFLOPs, latency).
        flags: Degenerate-predictor flags ('' for none).
        method_dir: The trained method's folder inside the cell's run folder ('' when there is none).
        val_auc_curve: Validation AUC after every evaluation round (its metrics.csv), to see whether it converged.
        val_branches: Validation AUC and balanced accuracy of the cell's non-deployed branches (result.json's
            ``val.extra``); {} where it has none (no branch, or trained before they were stored).
    """

    method: str
    fraction: float
    seed: int
    family: str = "alternative"
    deploys: str = "student"
    test: dict[str, float] = field(default_factory=dict)
    val: dict[str, float] = field(default_factory=dict)
    costs: dict[str, float] = field(default_factory=dict)
    flags: str = ""
    method_dir: str = ""
    val_auc_curve: tuple[float, ...] = ()
    val_branches: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def budget(self) -> Optional[tuple[str, int]]:
        """(the row without its budget, steps) of a budget-axis row ``<name>@<steps>``, else None."""
        return budget_of(self.method)

    def value(self, key: str) -> float:
        """A number by its results.csv column: a test metric (``auc``), a validation one (``val_auc``,
        ``val_loss``) or a cost (``transfer_s``); NaN where the row has none."""
        if key.startswith("val_"):
            return float(self.val.get(key[4:], math.nan))
        return float(self.test[key] if key in self.test else self.costs.get(key, math.nan))

    @property
    def run_dir(self) -> Optional[RunDir]:
        """The cell's run folder (None for a row without one)."""
        return RunDir(Path(self.method_dir).parent) if self.method_dir else None

    def csv_row(self) -> dict[str, Any]:
        """The row as results.csv writes it (:data:`RESULT_COLUMNS`)."""
        return {
            "method": self.method,
            "fraction": self.fraction,
            "seed": self.seed,
            **{k: self.test[k] for k in SCALAR_METRICS},
            "flags": self.flags,
            "val_loss": self.val.get("loss", math.nan),
            **{f"val_{k}": self.val.get(k, math.nan) for k in SCALAR_METRICS},
            **self.costs,
            "deploys": self.deploys,
            "method_dir": self.method_dir,
        }


def read_row(method: str, fraction: float, seed: int, base: str, method_dir: Path) -> BenchRow:
    """The row of a finished cell from its ``result.json`` (in ``method_dir``); ``base`` is the registered method
    that trained (it gives the family and what is deployed)."""
    result = MethodResult.from_json(read_json(MethodDir(method_dir).result))
    flat = result.row()
    cls = METHODS.get(base)
    return BenchRow(
        method=method,
        fraction=fraction,
        seed=seed,
        family=cls.family,
        deploys="student" if cls.uses_student else "FM",
        test={k: flat[k] for k in SCALAR_METRICS},
        val={"loss": flat["val_loss"], **{k: flat[f"val_{k}"] for k in SCALAR_METRICS}},
        costs={k: flat[k] for k in COST_COLUMNS},
        flags=flat["flags"],
        method_dir=str(method_dir),
        val_auc_curve=tuple(h["val_auc"] for h in _read_metrics(MethodDir(method_dir).metrics_csv) if "val_auc" in h),
        val_branches=result.val.get("extra") or {},
    )


def class_counts(row: BenchRow) -> Optional[dict[str, list[int]]]:
    """Per-split class counts of a cell (its run folder's data.json), or None for cells from older versions."""
    folder = row.run_dir
    if folder is None or not folder.data_json.is_file():
        return None
    return read_json(folder.data_json).get("class_counts")


def class_names(rows: list[BenchRow]) -> list[str]:
    """The class names the first cell recorded ([] if none did)."""
    folder = rows[0].run_dir if rows else None
    if folder is None or not folder.data_json.is_file():
        return []
    return list(read_json(folder.data_json)["class_names"])


def _read_metrics(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in r.items() if v not in ("", None)} for r in csv.DictReader(f)]


def history(row: BenchRow) -> list[dict[str, float]]:
    """The cell's metrics.csv (one row per evaluation round), [] where it has none."""
    return _read_metrics(MethodDir(row.method_dir).metrics_csv) if row.method_dir else []


def test_metrics(row: BenchRow) -> Optional[dict[str, Any]]:
    """The cell's test_metrics.json (confusion matrix, per-class report, non-deployed branches), or None."""
    path = MethodDir(row.method_dir).test_metrics if row.method_dir else None
    return read_json(path) if path is not None and path.is_file() else None


def cell_commits(rows: list[BenchRow]) -> tuple[Counter, Counter]:
    """(commit -> cells trained at it, commit -> cells re-tested at it), from each cell's env.json / retest.json; a
    commit whose package had uncommitted edits in that process reads "<sha> with uncommitted edits"."""
    trained: Counter = Counter()
    retested: Counter = Counter()
    for r in rows:
        folder = r.run_dir
        if folder is None:
            continue
        for name, counts in (("env.json", trained), ("retest.json", retested)):
            if (folder.path / name).is_file():
                env = read_json(folder.path / name)
                # a cell run with the package edited after its commit says so: the commit alone names other code
                counts[
                    str(env.get("git_sha") or "unknown")[:7]
                    + (" with uncommitted edits" if env.get("code_modified") else "")
                ] += 1
    return trained, retested
