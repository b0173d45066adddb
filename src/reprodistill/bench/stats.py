"""Statistics over bench rows, pure functions: per-row aggregates over seeds, paired per-seed differences with their
t-intervals, and the choices made on validation (never on test)."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import NamedTuple, Optional

import numpy as np

from reprodistill.bench.rows import BenchRow
from reprodistill.util.metrics import SCALAR_METRICS, ranking_metric, selection_score, separating_metric

# the columns :func:`aggregate` averages over seeds
AGGREGATED = (*SCALAR_METRICS, "transfer_s", "train_time_s", "latency_ms", "params", "gflops")
# Fewest seeds whose paired interval is reported: two differences give a t-interval on 1 degree of freedom, and two
# equal ones (one test image apart on both seeds) a zero-width interval that would read as certain.
MIN_SEEDS = 3
# two-sided 95% Student-t quantiles by degrees of freedom (1..30); normal beyond
# fmt: off
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
# fmt: on


@dataclass
class RowStats:
    """One bench row (method at a fraction) over its seeds: ``n`` seeds, what it deploys, and (mean, sample std) of
    every :data:`AGGREGATED` column."""

    n: int
    deploys: str
    stats: dict[str, tuple[float, float]]

    def mean(self, key: str) -> float:
        return self.stats[key][0]


def aggregate(rows: list[BenchRow]) -> dict[tuple[str, float], RowStats]:
    """(method, fraction) -> :class:`RowStats`; std is the sample std (0 for one seed)."""
    groups: dict[tuple[str, float], list[BenchRow]] = defaultdict(list)
    for r in rows:
        groups[(r.method, r.fraction)].append(r)
    out = {}
    for key, rs in groups.items():
        stats = {}
        for k in AGGREGATED:
            v = np.array([r.value(k) for r in rs])
            stats[k] = (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0)
        out[key] = RowStats(len(rs), rs[0].deploys, stats)
    return out


def fractions(rows: list[BenchRow]) -> list[float]:
    """The training fractions of the rows, largest first."""
    return sorted({r.fraction for r in rows}, reverse=True)


def deployed_key(row: BenchRow) -> tuple[str, int, float]:
    """What a row deploys, as far as its cost goes: the kind, parameter count and FLOPs (one architecture)."""
    return (row.deploys, int(row.value("params")), round(row.value("gflops"), 6))


def deployed_latency(rows: list[BenchRow]) -> dict[tuple[str, int, float], float]:
    """Latency of each deployed architecture: the fastest of all cells that deploy it. Every cell measured the same
    network, and load only adds time, so one figure per architecture (not per row) is what load disturbs least."""
    out: dict[tuple[str, int, float], float] = {}
    for r in rows:
        key, v = deployed_key(r), r.value("latency_ms")
        if math.isfinite(v):
            out[key] = min(out.get(key, math.inf), v)
    return out


class Paired(NamedTuple):
    """A mean per-seed difference, its 95% t-interval (NaN where none is claimed) and the seeds paired."""

    mean: float
    low: float
    high: float
    n: int


def paired_difference(
    rows: list[BenchRow], method: str, baseline: str, fraction: float, metric: str
) -> Optional[Paired]:
    """The mean per-seed difference method - baseline on ``metric`` (a results.csv column) with its 95% t-interval,
    over the seeds both have at ``fraction`` (same seed = same data subset and order); None without a common seed."""
    by = {(r.method, r.seed): r.value(metric) for r in rows if r.fraction == fraction}
    seeds = sorted(s for (m, s) in by if m == method and (baseline, s) in by)
    if not seeds:
        return None
    return interval(np.array([by[(method, s)] - by[(baseline, s)] for s in seeds]))


def interval(d: np.ndarray) -> Paired:
    """Mean of per-seed differences ``d`` with its 95% t-interval (NaN bounds, so no claim, for fewer than
    :data:`MIN_SEEDS` of them or no spread)."""
    spread = float(d.std(ddof=1)) if len(d) > 1 else 0.0
    if len(d) < MIN_SEEDS or spread == 0.0:  # no interval that could claim anything (see format_paired)
        return Paired(float(d.mean()), math.nan, math.nan, len(d))
    half = (_T975[len(d) - 2] if len(d) - 1 <= len(_T975) else 1.96) * spread / math.sqrt(len(d))
    return Paired(float(d.mean()), float(d.mean() - half), float(d.mean() + half), len(d))


def format_paired(diff: Optional[Paired]) -> str:
    """``+0.0123 [lo, hi] ✓`` (interval above 0) / ``✗`` (below); no interval, so no claim, for fewer than
    :data:`MIN_SEEDS` seeds or differences without spread."""
    if diff is None:
        return ""
    mean, lo, hi, n = diff
    if n < MIN_SEEDS:
        return f"{mean:+.4f} ({n} seed{'s' if n > 1 else ''}: too few for an interval)"
    if math.isnan(lo):
        return f"{mean:+.4f} (the same on all {n} seeds: no interval)"
    mark = " ✓" if lo > 0 else (" ✗" if hi < 0 else "")
    return f"{mean:+.4f} [{lo:+.4f}, {hi:+.4f}]{mark}"


def separated(diff: Paired) -> bool:
    """Whether a paired difference is above 0 beyond doubt: its interval above 0, or (no spread) the same positive
    difference on every one of at least :data:`MIN_SEEDS` seeds."""
    return diff.n >= MIN_SEEDS and (diff.low > 0 if math.isfinite(diff.low) else diff.mean > 0)


def mean_val(rows: list[BenchRow], method: str, fraction: float, metric: str = "auc") -> float:
    """Mean validation ``metric`` (higher is better) of a method's cells at a fraction (-inf where no cell recorded
    it)."""
    vals = [r.value(f"val_{metric}") for r in rows if r.method == method and r.fraction == fraction]
    vals = [v for v in vals if math.isfinite(v)]
    return float(np.mean(vals)) if vals else -math.inf


def choice_metric(rows: list[BenchRow], methods: list[str], fraction: float) -> str:
    """The validation metric that chooses among ``methods`` at ``fraction``: AUC, or balanced accuracy where the
    best mean validation AUC has saturated (:data:`~reprodistill.util.metrics.SATURATED_AUC`)."""
    return separating_metric("auc", max((mean_val(rows, m, fraction) for m in methods), default=-math.inf))


def best_on_validation(rows: list[BenchRow], methods: list[str], fraction: float, metric: str = "auc") -> Optional[str]:
    """The method with the best mean validation ``metric`` at ``fraction`` (None if none recorded it)."""
    scored = [(m, mean_val(rows, m, fraction, metric)) for m in methods]
    scored = [(m, v) for m, v in scored if math.isfinite(v)]
    return max(scored, key=lambda mv: mv[1])[0] if scored else None


def val_score(row: BenchRow, select: str) -> float:
    """Higher is better: the validation metric that ranks checkpoints and methods (never the test split)."""
    return selection_score(row.value(f"val_{ranking_metric(select)}"), select)


def best_student_cell(rows: list[BenchRow], select: str = "loss") -> Optional[BenchRow]:
    """The student-deploying method with the best mean *validation* score (the run's selection metric) at the
    largest fraction, and its median-seed cell by that score: chosen without looking at the test split."""
    frac = max(r.fraction for r in rows)
    cand = [r for r in rows if r.deploys == "student" and r.fraction == frac and math.isfinite(val_score(r, select))]
    if not cand:
        return None
    means: dict[str, list[float]] = defaultdict(list)
    for r in cand:
        means[r.method].append(val_score(r, select))
    best = max(means, key=lambda m: float(np.mean(means[m])))
    runs = sorted((r for r in cand if r.method == best), key=lambda r: val_score(r, select))
    return runs[len(runs) // 2]


def late_rise(rows: list[BenchRow], method: str, fraction: float) -> Optional[tuple[Paired, float, float]]:
    """How much a row's validation AUC still rose over the last third of its evaluation rounds: per seed, the last
    round's minus the one two thirds through (:func:`interval` over seeds), with the mean AUC at both points; None
    for rows with fewer than 3 rounds. An interval above 0 says the budget ended while the row was still learning."""
    curves = [r.val_auc_curve for r in rows if r.method == method and r.fraction == fraction]
    curves = [c for c in curves if len(c) >= 3 and all(math.isfinite(v) for v in c)]
    if not curves:
        return None
    at = [c[(2 * len(c)) // 3 - 1] for c in curves]
    end = [c[-1] for c in curves]
    return interval(np.array(end) - np.array(at)), float(np.mean(at)), float(np.mean(end))


def chosen_budgets(rows: list[BenchRow], fraction: float, metric: str) -> dict[str, str]:
    """For each row name of a budget axis (``<name>@<steps>``), the budget row validation chose at ``fraction``."""
    groups: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        if r.fraction == fraction and r.budget is not None:
            groups[r.budget[0]].add(r.method)
    out = {}
    for name, members in groups.items():
        best = best_on_validation(rows, sorted(members), fraction, metric)
        if best is not None:
            out[name] = best
    return out
