"""The bench report's plots (PNG, matplotlib's Agg backend, imported only when a report is written): accuracy vs
cost, accuracy vs training fraction, student vs FM size and latency, training curves, the best student's confusion
matrix."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from reprodistill.bench.rows import METRIC_NAMES, BenchRow, history, test_metrics
from reprodistill.bench.stats import aggregate, deployed_key, deployed_latency


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path, title: str = "") -> None:
    """Title, lay out, write the PNG and free the figure."""
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _plt().close(fig)


def _colors(methods: list[str]) -> dict[str, Any]:
    cmap = _plt().get_cmap("tab10" if len(methods) <= 10 else "tab20")
    return {m: cmap(i % cmap.N) for i, m in enumerate(methods)}


def plot_accuracy_vs_cost(path: Path, rows: list[BenchRow], methods: list[str]) -> None:
    """Test accuracy against transfer cost, one marker per row and fraction."""
    plt, colors, agg = _plt(), _colors(methods), aggregate(rows)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    fracs = sorted({k[1] for k in agg}, reverse=True)
    markers = "osD^v<>"
    for (m, f), a in agg.items():
        if not math.isfinite(a.mean("transfer_s")):  # cost unknown (cache entry from an older version)
            continue
        # methods of equal cost and accuracy would hide each other: spread them a little along the log x axis
        jitter = 1.04 ** (methods.index(m) - (len(methods) - 1) / 2) if m in methods else 1.0
        ax.errorbar(
            a.mean("transfer_s") * jitter,
            a.mean("accuracy"),
            yerr=a.stats["accuracy"][1],
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
    _save(fig, path)


def plot_accuracy_vs_fraction(path: Path, rows: list[BenchRow], methods: list[str]) -> None:
    """Test accuracy and AUC against the training fraction, one line per row."""
    plt, colors, agg = _plt(), _colors(methods), aggregate(rows)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("accuracy", "auc")):
        for m in methods:
            pts = sorted((f, a.stats[metric]) for (mm, f), a in agg.items() if mm == m)
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
    _save(fig, path, "Test metrics vs amount of labelled data")


def plot_size_latency(path: Path, rows: list[BenchRow]) -> None:
    """What each method ships: the student (all student methods ship the same network) vs the FM + probe."""
    plt = _plt()
    shipped: dict[str, tuple[float, float, float]] = {}
    latency = deployed_latency(rows)
    for r in rows:
        name = "student" if r.deploys == "student" else f"FM ({r.method})"
        if r.deploys == "student" and name in shipped and shipped[name][0] != r.value("params") / 1e6:
            name = f"student ({r.method})"  # another architecture (e.g. a pretrained student)
        shipped.setdefault(name, (r.value("params") / 1e6, latency.get(deployed_key(r), math.nan), r.value("gflops")))
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.5))
    names = list(shipped)
    for ax, i, label in zip(axes, range(3), ("params (M)", "latency, batch 1, 1 thread (ms)", "GFLOPs per image")):
        vals = [shipped[n][i] for n in names]
        bars = ax.bar(names, vals, color=["tab:green" if n.startswith("student") else "tab:gray" for n in names])
        ax.bar_label(bars, fmt="%.3g", fontsize=8)
        ax.set_title(label)
        ax.tick_params(axis="x", labelsize=8, rotation=15)
    _save(fig, path, "Deployed model: student vs foundation model")


def plot_training_curves(path: Path, rows: list[BenchRow], methods: list[str]) -> None:
    """Train loss and validation AUC per epoch of every method, for the first seed at the largest fraction."""
    plt, colors = _plt(), _colors(methods)
    frac = max(r.fraction for r in rows)
    seed = min(r.seed for r in rows)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for r in rows:
        if r.fraction != frac or r.seed != seed or not (hist := history(r)):
            continue
        ep = [h["epoch"] for h in hist]
        axes[0].plot(ep, [h["train_loss"] for h in hist], color=colors[r.method], label=r.method)
        axes[1].plot(ep, [h["val_auc"] for h in hist], color=colors[r.method], label=r.method)
    from matplotlib.ticker import MaxNLocator

    axes[0].set_yscale("log")
    axes[0].set_ylabel("train loss (method's own total, log scale)")
    axes[1].set_ylabel("validation AUC")
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    _save(fig, path, f"Training curves (fraction {frac:g}, seed {seed})")


def plot_confusion(path: Path, row: BenchRow, class_names: list[str]) -> None:
    """The confusion matrix of one cell (the best student's, chosen on validation)."""
    plt = _plt()
    cm = np.array((test_metrics(row) or {})["confusion_matrix"])
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
        f"{row.method} (frac {row.fraction:g}, seed {row.seed}): acc {row.value('accuracy'):.3f}",
        fontsize=9,
    )
    _save(fig, path)


def plot_auc_vs_budget(path: Path, rows: list[BenchRow]) -> bool:
    """Validation and test AUC (mean ± std over seeds) against the step budget, one line per method of a budget axis
    (rows ``<name>@<steps>``), at the smallest fraction that has one; False (no file) without a budget axis."""
    budget_rows = [r for r in rows if r.budget is not None]
    if not budget_rows:
        return False
    frac = min(r.fraction for r in budget_rows)
    agg = aggregate([r for r in budget_rows if r.fraction == frac])
    names = sorted({r.budget[0] for r in budget_rows if r.budget is not None})
    plt, colors = _plt(), _colors(names)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, split in zip(axes, ("validation", "test")):
        for name in names:
            pts = sorted((int(m.rpartition("@")[2]), m) for (m, _) in agg if m.rpartition("@")[0] == name)
            if not pts:
                continue
            if split == "test":
                ys = [agg[(m, frac)].stats["auc"] for _, m in pts]
            else:
                vals = [
                    [r.value("val_auc") for r in budget_rows if r.method == m and r.fraction == frac] for _, m in pts
                ]
                ys = [(float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0) for v in vals]
            ax.errorbar([p[0] for p in pts], [y[0] for y in ys], yerr=[y[1] for y in ys], marker="o", capsize=3,
                        color=colors[name], label=name)  # fmt: skip
        ax.set_xscale("log")
        steps = sorted({r.budget[1] for r in budget_rows if r.budget is not None})
        ax.set_xticks(steps, [str(n) for n in steps])
        ax.minorticks_off()
        ax.set_xlabel("optimiser steps (log scale)")
        ax.set_ylabel(f"{split} AUC (mean ± std over seeds)")
        ax.set_title(split)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    _save(fig, path, f"AUC against the step budget (fraction {frac:g})")
    return True
