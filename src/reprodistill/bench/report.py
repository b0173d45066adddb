"""The bench report: ``report.md`` (mean ± std tables) and PNG plots, from the grid's result rows."""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional

import numpy as np

from reprodistill.config import RunConfig, method_variant
from reprodistill.engine.profile import LATENCY_RULE
from reprodistill.engine.run_dir import MethodDir, RunDir
from reprodistill.engine.sanity import majority_metrics, published_line
from reprodistill.util.checkpoint import read_json, write_text
from reprodistill.util.metrics import SCALAR_METRICS, ranking_metric, selection_rule_text, selection_score

METRIC_NAMES = {"accuracy": "acc", "balanced_accuracy": "bal. acc", "macro_f1": "macro-F1", "auc": "AUC"}


def aggregate(rows: list[dict[str, Any]]) -> dict[tuple[str, float], dict[str, Any]]:
    """(method, fraction) -> {'n': seeds, '<metric>': (mean, std), cost and size means}; std is the sample std."""
    groups: dict[tuple[str, float], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["method"], float(r["fraction"]))].append(r)
    out = {}
    for key, rs in groups.items():
        agg: dict[str, Any] = {"n": len(rs), "deploys": rs[0]["deploys"]}
        for k in (*SCALAR_METRICS, "transfer_s", "train_time_s", "latency_ms", "params", "gflops"):
            v = np.array([float(r[k]) for r in rs])
            agg[k] = (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0)
        out[key] = agg
    return out


def _deployed_key(row: dict[str, Any]) -> tuple[str, int, float]:
    """What a row deploys, as far as its cost goes: the kind, parameter count and FLOPs (one architecture)."""
    return (str(row["deploys"]), int(float(row["params"])), round(float(row["gflops"]), 6))


def deployed_latency(rows: list[dict[str, Any]]) -> dict[tuple[str, int, float], float]:
    """Latency of each deployed architecture: the fastest of all cells that deploy it. Every cell measured the same
    network, and load only adds time, so one figure per architecture (not per row) is what load disturbs least."""
    out: dict[tuple[str, int, float], float] = {}
    for r in rows:
        key, v = _deployed_key(r), float(r["latency_ms"])
        if math.isfinite(v):
            out[key] = min(out.get(key, math.inf), v)
    return out


def _pm(mean_std: tuple[float, float], n: int) -> str:
    m, s = mean_std
    return f"{m:.4f} ± {s:.4f}" if n > 1 else f"{m:.4f}"


def _class_counts(row: dict[str, Any]) -> Optional[dict[str, list[int]]]:
    """Per-split class counts of a cell (its run folder's data.json), or None for cells from older versions."""
    if not row.get("method_dir"):
        return None
    path = RunDir(Path(row["method_dir"]).parent).data_json
    if not path.is_file():
        return None
    return read_json(path).get("class_counts")


def _flag_summary(rs: list[dict[str, Any]]) -> str:
    flagged = [r for r in rs if r.get("flags")]
    if not flagged:
        return ""
    kinds = sorted({f.split(":")[0] for r in flagged for f in str(r["flags"]).split("; ")})
    return f"**{', '.join(kinds)}** in {len(flagged)}/{len(rs)} seeds"


def results_markdown(rows: list[dict[str, Any]], methods: list[str]) -> str:
    """One table per training fraction: mean ± std over seeds, cost, deployed size, degenerate-predictor flags and
    the majority-class row."""
    agg, latency = aggregate(rows), deployed_latency(rows)
    out = []
    for frac in sorted({k[1] for k in agg}, reverse=True):
        at_frac = [r for r in rows if float(r["fraction"]) == frac]
        out += [
            f"### Training fraction {frac:g}",
            "",
            "| method | seeds | "
            + " | ".join(METRIC_NAMES.values())
            + " | transfer (s) | deployed | params (M) | latency (ms) | flags |",
            "|---|---:|" + "---:|" * len(METRIC_NAMES) + "---:|---|---:|---:|---|",
        ]
        for m in methods:
            a = agg.get((m, frac))
            if a is None:
                continue
            metrics = " | ".join(_pm(a[k], a["n"]) for k in SCALAR_METRICS)
            mine = [r for r in at_frac if r["method"] == m]
            flags = _flag_summary(mine)
            out.append(
                f"| {m} | {a['n']} | {metrics} | {a['transfer_s'][0]:.0f} | {a['deploys']} | "
                f"{a['params'][0] / 1e6:.2f} | {latency.get(_deployed_key(mine[0]), math.nan):.1f} | {flags} |"
            )
        counts = next((c for c in map(_class_counts, at_frac) if c), None)  # any cell that recorded them
        if counts:
            maj = majority_metrics(counts["train"], counts["test"])
            cells = " | ".join(f"{maj[k]:.4f}" for k in SCALAR_METRICS)
            out.append(f"| *majority class* | | {cells} | | | | | reference |")
        out.append("")
    out.append(
        f"Latency: {LATENCY_RULE}, measured in every cell; each deployed architecture shows the fastest of its cells "
        "(the same network in every row that deploys it)."
    )
    return "\n".join(out)


# two-sided 95% Student-t quantiles by degrees of freedom (1..30); normal beyond
# fmt: off
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
# fmt: on


def paired_difference(
    rows: list[dict[str, Any]], method: str, baseline: str, fraction: float, metric: str
) -> Optional[tuple[float, float, float, int]]:
    """(mean, low, high, n): the mean per-seed difference method - baseline on ``metric`` with its 95% t-interval,
    over the seeds both have at ``fraction`` (same seed = same data subset and order); None without a common seed."""
    by = {(r["method"], int(r["seed"])): float(r[metric]) for r in rows if float(r["fraction"]) == fraction}
    seeds = sorted(s for (m, s) in by if m == method and (baseline, s) in by)
    if not seeds:
        return None
    d = np.array([by[(method, s)] - by[(baseline, s)] for s in seeds])
    spread = float(d.std(ddof=1)) if len(d) > 1 else 0.0
    if len(d) < MIN_SEEDS or spread == 0.0:  # no interval that could claim anything (see _fmt_diff)
        return float(d.mean()), math.nan, math.nan, len(d)
    half = (_T975[len(d) - 2] if len(d) - 1 <= len(_T975) else 1.96) * spread / math.sqrt(len(d))
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half), len(d)


# Fewest seeds whose paired interval is reported: two differences give a t-interval on 1 degree of freedom, and two
# equal ones (one test image apart on both seeds) a zero-width interval that would read as certain.
MIN_SEEDS = 3


def _fmt_diff(diff: Optional[tuple[float, float, float, int]]) -> str:
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


KD_BASELINES = ("kd", "dkd", "fitnet", "at", "rkd", "cka_kd")
REPROGRAMMING = ("rd", "drd", "tdmr")


def _separated(diff: tuple[float, float, float, int]) -> bool:
    """Whether a paired difference is above 0 beyond doubt: its interval above 0, or (no spread) the same positive
    difference on every one of at least :data:`MIN_SEEDS` seeds."""
    mean, lo, _, n = diff
    return n >= MIN_SEEDS and (lo > 0 if math.isfinite(lo) else mean > 0)


def _mean_val_auc(rows: list[dict[str, Any]], method: str, fraction: float) -> float:
    """Mean validation AUC of a method's cells at a fraction (-inf where no cell recorded one)."""
    vals = [float(r.get("val_auc", "nan")) for r in rows if r["method"] == method and float(r["fraction"]) == fraction]
    vals = [v for v in vals if math.isfinite(v)]
    return float(np.mean(vals)) if vals else -math.inf


def _best_on_validation(rows: list[dict[str, Any]], methods: list[str], fraction: float) -> Optional[str]:
    """The method with the best mean validation AUC at ``fraction`` (None if none recorded one)."""
    scored = [(m, _mean_val_auc(rows, m, fraction)) for m in methods]
    scored = [(m, v) for m, v in scored if math.isfinite(v)]
    return max(scored, key=lambda mv: mv[1])[0] if scored else None


def verdict_markdown(rows: list[dict[str, Any]], methods: list[str], bases: dict[str, str]) -> str:
    """One line per fraction a user can act on: the method to deploy (the best mean validation AUC of every row; where
    that row deploys the FM, also the best row that ships the small student) and, on the test split, paired over
    seeds, reprodistill's best transfer method (RD / DRD / TDMR, any variant, chosen on validation) minus the best
    alternative (everything else: the student alone or pretrained, semi-supervised, KD and PEFT rows, chosen on
    validation the same way; where that is a PEFT row, which ships the FM, also minus the best small-model one).
    Where the paired validation difference between those two does not lie above 0, the line says validation cannot
    separate them (on BreastMNIST 10% RD and FixMatch were 0.002 apart on one CPU and tied to four decimals on
    another)."""
    agg = aggregate(rows)
    out = []
    for frac in sorted({k[1] for k in agg}, reverse=True):
        present = [m for m in methods if (m, frac) in agg]
        small = [m for m in present if agg[(m, frac)]["deploys"] == "student"]
        others = [m for m in present if bases.get(m, m) not in REPROGRAMMING]
        ours = _best_on_validation(rows, [m for m in present if bases.get(m, m) in REPROGRAMMING], frac)
        alt = _best_on_validation(rows, others, frac)
        pick = _best_on_validation(rows, [m for m in (ours, alt) if m], frac)
        if pick is None:
            continue
        what = f"{agg[(pick, frac)]['deploys']}, {agg[(pick, frac)]['params'][0] / 1e6:.2f}M params"
        val = {m: f"{_mean_val_auc(rows, m, frac):.4f}" for m in present}
        line = f"- **Fraction {frac:g}: deploy `{pick}`** ({what}; mean validation AUC {val[pick]})"
        runner_up = alt if pick == ours else ours
        if runner_up:  # a near tie on a small validation split: the pick could flip with another seed or CPU
            v = paired_difference(rows, pick, runner_up, frac, "val_auc")
            if v and not _separated(v):
                line += f"; validation does not separate it from `{runner_up}` (val AUC {_fmt_diff(v)})"
        best_small = _best_on_validation(rows, small, frac)
        if pick not in small and best_small:  # the FM itself (a PEFT row): name the best model that is small to ship
            line += f"; if only the small model can be deployed: `{best_small}` (mean validation AUC {val[best_small]})"
        if ours and alt:
            n, text = _verdict_difference(rows, ours, alt, frac)
            line += (
                f". Test, paired over {n} seed{'s' if n != 1 else ''}, reprodistill's best `{ours}` (val {val[ours]}) "
                f"minus the best alternative `{alt}` (val {val[alt]}): {text}"
            )
            small_alt = _best_on_validation(rows, [m for m in others if m in small], frac)
            if alt not in small and small_alt:
                line += f"; minus the best small-model alternative `{small_alt}` (val {val[small_alt]}): "
                line += _verdict_difference(rows, ours, small_alt, frac)[1]
        out.append(line + ".")
    return "\n".join(out)


def _verdict_difference(rows: list[dict[str, Any]], a: str, b: str, frac: float) -> tuple[int, str]:
    """(seeds paired, "AUC ..., bal. acc ...") of ``a`` minus ``b`` on the test split."""
    diffs = {k: paired_difference(rows, a, b, frac, k) for k in ("auc", "balanced_accuracy")}
    n = max((d[3] for d in diffs.values() if d), default=0)
    return n, f"AUC {_fmt_diff(diffs['auc'])}, bal. acc {_fmt_diff(diffs['balanced_accuracy'])}"


def paired_markdown(rows: list[dict[str, Any]], methods: list[str], bases: dict[str, str]) -> str:
    """Paired per-seed differences: every student-deploying method vs the student alone, and each reprogramming
    method (RD / DRD / TDMR and their variants) vs the KD baseline with the best mean *validation* AUC at that
    fraction (chosen as a user would choose it: the test split never picks the baseline)."""
    agg = aggregate(rows)
    metrics = ("auc", "balanced_accuracy", "accuracy")
    out = []
    for frac in sorted({k[1] for k in agg}, reverse=True):
        present = [m for m in methods if (m, frac) in agg and agg[(m, frac)]["deploys"] == "student"]
        lines = []
        if "student" in present:
            for m in present:
                if m != "student":
                    cells = " | ".join(_fmt_diff(paired_difference(rows, m, "student", frac, k)) for k in metrics)
                    lines.append(f"| {m} | student alone | {cells} |")
        kd = [m for m in present if bases.get(m, m) in KD_BASELINES]
        if kd:
            best_kd = max(kd, key=lambda m: _mean_val_auc(rows, m, frac))
            for m in present:
                if bases.get(m, m) in REPROGRAMMING:
                    cells = " | ".join(_fmt_diff(paired_difference(rows, m, best_kd, frac, k)) for k in metrics)
                    lines.append(f"| {m} | best KD baseline ({best_kd}) | {cells} |")
        if lines:
            out += [
                f"### Paired differences, training fraction {frac:g}",
                "",
                "| method | minus | AUC | bal. acc | acc |",
                "|---|---|---:|---:|---:|",
                *lines,
                "",
            ]
    if out:
        out.insert(
            0,
            "Mean per-seed difference with its 95% t-interval over the seeds both methods ran (same seed = same "
            "data subset, order and initialisation); ✓ the interval lies above 0, ✗ below. The best KD baseline is "
            "the KD row with the best mean validation AUC.\n",
        )
    return "\n".join(out)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colors(methods: list[str]) -> dict[str, Any]:
    cmap = _plt().get_cmap("tab10" if len(methods) <= 10 else "tab20")
    return {m: cmap(i % cmap.N) for i, m in enumerate(methods)}


def plot_accuracy_vs_cost(path: Path, rows: list[dict[str, Any]], methods: list[str]) -> None:
    plt, colors, agg = _plt(), _colors(methods), aggregate(rows)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    fracs = sorted({k[1] for k in agg}, reverse=True)
    markers = "osD^v<>"
    for (m, f), a in agg.items():
        if not math.isfinite(a["transfer_s"][0]):  # cost unknown (cache entry from an older version)
            continue
        # methods of equal cost and accuracy would hide each other: spread them a little along the log x axis
        jitter = 1.04 ** (methods.index(m) - (len(methods) - 1) / 2) if m in methods else 1.0
        ax.errorbar(
            a["transfer_s"][0] * jitter,
            a["accuracy"][0],
            yerr=a["accuracy"][1],
            fmt=markers[fracs.index(f) % 7],
            color=colors[m],
            capsize=3,
            markersize=7,
            markerfacecolor="none",
            markeredgewidth=1.5,
        )
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colors[m], marker="o", linestyle="", label=m) for m in methods]
    handles += [
        Line2D([], [], color="black", marker=markers[i % 7], linestyle="", label=f"fraction {f:g}")
        for i, f in enumerate(fracs)
    ]
    ax.legend(handles=handles, fontsize=7, ncol=2, loc="best")
    ax.set_xscale("log")
    ax.set_xlabel("transfer cost: training + FM pass + preparation (s, log scale)")
    ax.set_ylabel("test accuracy (mean ± std over seeds)")
    ax.set_title("Accuracy vs training cost")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_accuracy_vs_fraction(path: Path, rows: list[dict[str, Any]], methods: list[str]) -> None:
    plt, colors, agg = _plt(), _colors(methods), aggregate(rows)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("accuracy", "auc")):
        for m in methods:
            pts = sorted((f, a[metric]) for (mm, f), a in agg.items() if mm == m)
            if not pts:
                continue
            xs = [p[0] for p in pts]
            ax.errorbar(
                xs, [p[1][0] for p in pts], yerr=[p[1][1] for p in pts], marker="o", capsize=3, color=colors[m], label=m
            )
        fracs = sorted({f for (_, f) in agg})
        ax.set_xscale("log")
        ax.set_xticks(fracs, [f"{f:g}" for f in fracs])
        ax.minorticks_off()
        ax.set_xlabel("fraction of the training split (log scale)")
        ax.set_ylabel(f"test {METRIC_NAMES[metric]}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("Test metrics vs amount of labelled data")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_size_latency(path: Path, rows: list[dict[str, Any]]) -> None:
    """What each method ships: the student (all student methods ship the same network) vs the FM + probe."""
    plt = _plt()
    shipped: dict[str, tuple[float, float, float]] = {}
    latency = deployed_latency(rows)
    for r in rows:
        name = "student" if r["deploys"] == "student" else f"FM ({r['method']})"
        if r["deploys"] == "student" and name in shipped and shipped[name][0] != float(r["params"]) / 1e6:
            name = f"student ({r['method']})"  # another architecture (e.g. a pretrained student)
        shipped.setdefault(
            name, (float(r["params"]) / 1e6, latency.get(_deployed_key(r), math.nan), float(r["gflops"]))
        )
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.5))
    names = list(shipped)
    for ax, i, label in zip(axes, range(3), ("params (M)", "latency, batch 1, 1 thread (ms)", "GFLOPs per image")):
        vals = [shipped[n][i] for n in names]
        bars = ax.bar(names, vals, color=["tab:green" if n.startswith("student") else "tab:gray" for n in names])
        ax.bar_label(bars, fmt="%.3g", fontsize=8)
        ax.set_title(label)
        ax.tick_params(axis="x", labelsize=8, rotation=15)
    fig.suptitle("Deployed model: student vs foundation model")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _read_history(path: Path) -> list[dict[str, float]]:
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def plot_training_curves(path: Path, rows: list[dict[str, Any]], methods: list[str]) -> None:
    """Train loss and validation AUC per epoch of every method, for the first seed at the largest fraction."""
    plt, colors = _plt(), _colors(methods)
    frac = max(float(r["fraction"]) for r in rows)
    seed = min(int(r["seed"]) for r in rows)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for r in rows:
        if float(r["fraction"]) != frac or int(r["seed"]) != seed:
            continue
        hist_path = MethodDir(r["method_dir"]).metrics_csv
        if not hist_path.is_file():
            continue
        hist = _read_history(hist_path)
        ep = [h["epoch"] for h in hist]
        axes[0].plot(ep, [h["train_loss"] for h in hist], color=colors[r["method"]], label=r["method"])
        axes[1].plot(ep, [h["val_auc"] for h in hist], color=colors[r["method"]], label=r["method"])
    from matplotlib.ticker import MaxNLocator

    axes[0].set_yscale("log")
    axes[0].set_ylabel("train loss (method's own total, log scale)")
    axes[1].set_ylabel("validation AUC")
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.suptitle(f"Training curves (fraction {frac:g}, seed {seed})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _val_score(row: dict[str, Any], select: str) -> float:
    """Higher is better: the validation metric that ranks checkpoints and methods (never the test split)."""
    return selection_score(row.get(f"val_{ranking_metric(select)}", math.nan), select)


def best_student_cell(rows: list[dict[str, Any]], select: str = "loss") -> Optional[dict[str, Any]]:
    """The student-deploying method with the best mean *validation* score (the run's selection metric) at the
    largest fraction, and its median-seed cell by that score: chosen without looking at the test split."""
    frac = max(float(r["fraction"]) for r in rows)
    cand = [r for r in rows if r["deploys"] == "student" and float(r["fraction"]) == frac]
    cand = [r for r in cand if math.isfinite(_val_score(r, select))]
    if not cand:
        return None
    means: dict[str, list[float]] = defaultdict(list)
    for r in cand:
        means[r["method"]].append(_val_score(r, select))
    best = max(means, key=lambda m: float(np.mean(means[m])))
    runs = sorted((r for r in cand if r["method"] == best), key=lambda r: _val_score(r, select))
    return runs[len(runs) // 2]


def plot_confusion(path: Path, row: dict[str, Any], class_names: list[str]) -> None:
    plt = _plt()
    test = read_json(MethodDir(row["method_dir"]).test_metrics)
    cm = np.array(test["confusion_matrix"])
    k = len(cm)
    names = class_names if len(class_names) == k else [str(i) for i in range(k)]
    fig, ax = plt.subplots(figsize=(1.2 * k + 2.5, 1.2 * k + 2))
    ax.imshow(cm, cmap="Blues")
    for i in range(k):
        for j in range(k):
            ax.text(
                j, i, str(cm[i, j]), ha="center", va="center", color="white" if cm[i, j] > cm.max() / 2 else "black"
            )
    ax.set_xticks(range(k), names, rotation=30)
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(
        f"{row['method']} (frac {float(row['fraction']):g}, seed {row['seed']}): acc {float(row['accuracy']):.3f}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _budget(cfg: RunConfig) -> str:
    t = cfg.train
    if t.steps is not None:
        return (
            f"{t.steps} optimiser steps for every cell whatever the training-set size ({t.epochs} evaluation rounds), "
            f"batch {t.batch_size}"
        )
    return f"{t.epochs} epochs (passes over the training subset), batch {t.batch_size}"


def _machine() -> str:
    import os
    import platform

    import torch

    return (
        f"{platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )


def write_report(
    bench_dir: Path,
    cfg: RunConfig,
    rows: list[dict[str, Any]],
    wall_time_s: float,
    cells_run: Optional[int] = None,
    command: Optional[str] = None,
) -> Path:
    """Write report.md and plots/*.png into ``bench_dir``; returns the report path."""
    from reprodistill.engine.environment import git_sha

    plots = bench_dir / "plots"
    plots.mkdir(exist_ok=True)
    methods = list(cfg.methods)
    plot_accuracy_vs_cost(plots / "accuracy_vs_cost.png", rows, methods)
    plot_accuracy_vs_fraction(plots / "accuracy_vs_fraction.png", rows, methods)
    plot_size_latency(plots / "student_vs_fm_size_latency.png", rows)
    plot_training_curves(plots / "training_curves.png", rows, methods)
    best = best_student_cell(rows, cfg.train.select_metric)
    class_names = []
    first_data = RunDir(Path(rows[0]["method_dir"]).parent).data_json if rows else None
    if first_data and first_data.is_file():
        class_names = read_json(first_data)["class_names"]
    if best:
        plot_confusion(plots / "confusion_best_student.png", best, class_names)
    fm_rows = _branch_rows(rows)
    bases = {m: method_variant(cfg, m)[0] for m in methods}
    select = cfg.train.select_metric
    compute_s = sum(float(r["transfer_s"]) for r in rows if math.isfinite(float(r["transfer_s"])))
    lines = [
        f"# reprodistill bench: {cfg.name or 'bench'}",
        "",
        f"Data `{cfg.data.source}`; teacher `{cfg.teacher.name}`; student `{cfg.student.name}`; {_budget(cfg)}, "
        f"{cfg.train.optimizer} lr {cfg.train.lr}, class weights {cfg.train.class_weights}; seeds {cfg.bench.seeds}; "
        f"fractions {cfg.bench.fractions} (a fraction's subset is drawn per seed; val and test are fixed). "
        "Test metrics of the deployed model, mean ± sample std over seeds. Transfer cost = the method's training time "
        "+ the FM feature pass its cached features needed + its preparation (probe fit, stage 1).",
        "",
        f"Reported checkpoint: each cell's best.pt, {selection_rule_text(select)}"
        "; the test split never chooses anything. The confusion matrix below, `export` and `predict` use the same "
        "rule. A row flagged ONE-CLASS predicts (nearly) one class for the whole test split: a degenerate predictor, "
        "not a result; the majority-class row shows what such a row is worth.",
        "",
        "## Verdict",
        "",
        verdict_markdown(rows, methods, bases)
        or "No method recorded a validation AUC: nothing to choose from (cells from an older version).",
        "",
        "Every choice above is made on the validation split; the test split only measures it. ✓ the paired 95% "
        "interval lies above 0, ✗ below.",
        "",
        "## Results",
        "",
        results_markdown(rows, methods),
    ]
    variants = [f"`{name}` = {v}" for name, v in cfg.bench.variants.items() if name in methods]
    if variants:
        lines += ["Variants: " + "; ".join(variants) + ".", ""]
    ref = published_line(cfg.data.source)
    if ref:
        lines += [ref, ""]
    paired = paired_markdown(rows, methods, bases)
    if paired:
        lines += ["## Paired comparisons", "", paired]
    if fm_rows:
        lines += ["### Non-deployed FM branches (reported by their methods)", "", fm_rows, ""]
    kept = cells_trained_here(cells_run, len(rows))
    lines += [
        "## How this was made",
        "",
        f"- Command: `{command or 'reprodistill bench'}`",
        f"- Code commit: `{git_sha() or 'unknown'}`",
        *_cell_commits(rows),
        f"- Machine: {_machine()}",
        f"- Wall time of this invocation: {wall_time_s:.0f} s{kept}; summed transfer cost of all {len(rows)} cells: "
        f"{compute_s:.0f} s.",
        "",
        "![accuracy vs cost](plots/accuracy_vs_cost.png)",
        "![accuracy vs fraction](plots/accuracy_vs_fraction.png)",
        "![student vs FM](plots/student_vs_fm_size_latency.png)",
        "![training curves](plots/training_curves.png)",
    ]
    if best:
        lines.append("![confusion matrix of the best student](plots/confusion_best_student.png)")
    path = bench_dir / "report.md"
    write_text(path, "\n".join(lines) + "\n")
    return path


def cells_trained_here(cells_run: Optional[int], cells: int) -> str:
    """The report's clause on how many of the cells this invocation trained ('' when not known)."""
    if cells_run is None:
        return ""
    if cells_run >= cells:
        return f", all {cells} cells trained by this command"
    return f", {cells_run} of {cells} cells trained by this command, the rest earlier or by other processes"


def _cell_commits(rows: list[dict[str, Any]]) -> list[str]:
    """Report lines naming the commits the cells trained at and, where ``--retest`` ran, were re-tested at."""
    trained: dict[str, int] = defaultdict(int)
    retested: dict[str, int] = defaultdict(int)
    for r in rows:
        folder = Path(r["method_dir"]).parent
        for name, counts in (("env.json", trained), ("retest.json", retested)):
            if (folder / name).is_file():
                counts[str(read_json(folder / name).get("git_sha") or "unknown")[:7]] += 1
    lines = []
    for what, counts in (("trained", trained), ("re-tested (stored checkpoints, no training)", retested)):
        if counts:
            lines.append(f"- Cells {what} at: " + ", ".join(f"`{c}` ({n})" for c, n in sorted(counts.items())))
    return lines


def _branch_rows(rows: list[dict[str, Any]]) -> str:
    """Table of branches such as RD's reprogrammed FM or the KD baselines' probed FM (mean ± std over seeds)."""
    vals: dict[tuple[str, str, float], list[tuple[float, float]]] = defaultdict(list)
    for r in rows:
        p = MethodDir(r["method_dir"]).test_metrics
        if not p.is_file():
            continue
        for branch, m in read_json(p).get("extra", {}).items():
            vals[(r["method"], branch, float(r["fraction"]))].append((m["accuracy"], m["auc"]))
    if not vals:
        return ""
    out = ["| method | branch | fraction | seeds | acc | AUC |", "|---|---|---:|---:|---:|---:|"]
    for (m, b, f), v in sorted(vals.items(), key=lambda kv: (-kv[0][2], kv[0][0])):
        a = np.array(v)
        std = a.std(0, ddof=1) if len(v) > 1 else np.zeros(2)
        acc, auc = _pm((a[:, 0].mean(), std[0]), len(v)), _pm((a[:, 1].mean(), std[1]), len(v))
        out.append(f"| {m} | {b} | {f:g} | {len(v)} | {acc} | {auc} |")
    return "\n".join(out)


__all__ = ["aggregate", "results_markdown", "write_report", "best_student_cell"]
