"""The bench report, ``report.md``: it only writes markdown, from the typed rows (:mod:`.rows`), the statistics
(:mod:`.stats`) and the verdict (:mod:`.verdict`), and has :mod:`.plots` draw the PNGs it links."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Optional

import numpy as np

from reprodistill.bench import plots as plots_module
from reprodistill.bench.rows import (
    METRIC_NAMES,
    BenchRow,
    budget_of,
    cell_commits,
    class_counts,
    class_names,
    test_metrics,
)
from reprodistill.bench.stats import (
    aggregate,
    best_student_cell,
    choice_metric,
    chosen_budgets,
    deployed_key,
    deployed_latency,
    format_paired,
    fractions,
    late_rise,
    mean_val,
    paired_difference,
    separated,
)
from reprodistill.bench.verdict import families, verdict_markdown
from reprodistill.config import RunConfig
from reprodistill.engine.profile import LATENCY_RULE
from reprodistill.engine.sanity import majority_metrics, published_line
from reprodistill.util.checkpoint import write_text
from reprodistill.util.metrics import SCALAR_METRICS, selection_rule_text


def _pm(mean_std: tuple[float, float], n: int) -> str:
    m, s = mean_std
    return f"{m:.4f} ± {s:.4f}" if n > 1 else f"{m:.4f}"


def _flag_summary(rs: list[BenchRow]) -> str:
    flagged = [r for r in rs if r.flags]
    if not flagged:
        return ""
    kinds = sorted({f.split(":")[0] for r in flagged for f in r.flags.split("; ")})
    return f"**{', '.join(kinds)}** in {len(flagged)}/{len(rs)} seeds"


def results_markdown(rows: list[BenchRow], methods: list[str]) -> str:
    """One table per training fraction: mean ± std over seeds, cost, deployed size, degenerate-predictor flags and
    the majority-class row."""
    agg, latency = aggregate(rows), deployed_latency(rows)
    out = []
    for frac in sorted({k[1] for k in agg}, reverse=True):
        at_frac = [r for r in rows if r.fraction == frac]
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
            metrics = " | ".join(_pm(a.stats[k], a.n) for k in SCALAR_METRICS)
            mine = [r for r in at_frac if r.method == m]
            flags = _flag_summary(mine)
            out.append(
                f"| {m} | {a.n} | {metrics} | {a.mean('transfer_s'):.0f} | {a.deploys} | "
                f"{a.mean('params') / 1e6:.2f} | {latency.get(deployed_key(mine[0]), math.nan):.1f} | {flags} |"
            )
        counts = next((c for c in map(class_counts, at_frac) if c), None)  # any cell that recorded them
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


def paired_markdown(rows: list[BenchRow], methods: list[str]) -> str:
    """Paired per-seed differences: every student-deploying method vs the student alone, and each transfer method
    (family ``transfer``: RD / DRD / TDMR and their variants) vs the KD baseline (family ``kd``) with the best mean
    *validation* AUC at that fraction (chosen as a user would choose it: the test split never picks the baseline)."""
    agg, family = aggregate(rows), families(rows)
    metrics = ("auc", "balanced_accuracy", "accuracy")
    out = []
    for frac in sorted({k[1] for k in agg}, reverse=True):
        present = [m for m in methods if (m, frac) in agg and agg[(m, frac)].deploys == "student"]
        lines = []
        if "student" in present:
            for m in present:
                if m != "student":
                    cells = " | ".join(format_paired(paired_difference(rows, m, "student", frac, k)) for k in metrics)
                    lines.append(f"| {m} | student alone | {cells} |")
        kd = [m for m in present if family[m] == "kd"]
        if kd:
            metric = choice_metric(rows, present, frac)
            best_kd = max(kd, key=lambda m: mean_val(rows, m, frac, metric))
            for m in present:
                if family[m] == "transfer":
                    cells = " | ".join(format_paired(paired_difference(rows, m, best_kd, frac, k)) for k in metrics)
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
            "the KD row with the best mean validation AUC (balanced accuracy where AUC saturates).\n",
        )
    return "\n".join(out)


def convergence_markdown(rows: list[BenchRow], methods: list[str]) -> str:
    """Whether each row had converged when its budget ended: its validation AUC two thirds through its evaluation
    rounds and at the last one, the rise paired over seeds (:func:`~reprodistill.bench.stats.late_rise`)."""
    lines, rising = [], []
    for frac in fractions(rows):
        for m in methods:
            found = late_rise(rows, m, frac)
            if found is None:
                continue
            d, at, end = found
            lines.append(f"| {m} | {frac:g} | {d.n} | {at:.4f} | {end:.4f} | {format_paired(d)} |")
            if separated(d):
                rising.append(f"`{m}` (fraction {frac:g})")
    if not lines:
        return ""
    return "\n".join([
        "Validation AUC two thirds through each row's evaluation rounds and at its last round, and the rise between "
        "them paired over seeds: ✓ still rising when the budget ended (a longer budget may help the row; "
        "`bench.steps` lets validation choose one), ✗ falling.",
        "",
        "| method | fraction | seeds | val AUC at 2/3 | at the end | rise |",
        "|---|---:|---:|---:|---:|---|",
        *lines,
        "",
        ("Still rising at its last round: " + ", ".join(rising) + ".") if rising else
        "No row was still rising beyond doubt at its last round.",
    ])  # fmt: skip


def budget_markdown(rows: list[BenchRow], methods: list[str]) -> str:
    """The step budget validation chose for each row of a budget axis (``bench.steps``), what it scored and cost."""
    agg, out = aggregate(rows), []
    for frac in fractions(rows):
        present = [m for m in methods if (m, frac) in agg]
        metric = choice_metric(rows, present, frac)
        chosen = chosen_budgets(rows, frac, metric)
        name = "AUC" if metric == "auc" else METRIC_NAMES[metric]
        for base, pick in chosen.items():
            budgets = sorted(r.budget[1] for r in rows if r.fraction == frac and r.budget and r.budget[0] == base
                             and r.seed == min(x.seed for x in rows))  # fmt: skip
            a = agg[(pick, frac)]
            out.append(f"| {base} | {frac:g} | {', '.join(map(str, budgets))} | {pick.rpartition('@')[2]} | "
                       f"{mean_val(rows, pick, frac, metric):.4f} | {_pm(a.stats['auc'], a.n)} | "
                       f"{a.mean('transfer_s'):.0f} |")  # fmt: skip
    if not out:
        return ""
    return "\n".join([
        "Each method's step budget is chosen on validation like any other setting (the verdict compares the "
        "(method, budget) rows); the cost is that of the chosen budget.",
        "",
        f"| method | fraction | budgets (steps) | chosen | its validation {name} | test AUC | transfer (s) |",
        "|---|---:|---|---:|---:|---:|---:|",
        *out,
    ])  # fmt: skip


def _budget(cfg: RunConfig) -> str:
    t = cfg.train
    # the budget axis (bench.steps, already expanded into rows <method>@<steps>): each row's budget is in its name
    axis = sorted({b[1] for b in map(budget_of, cfg.methods) if b} or {int(n) for n in cfg.bench.steps})
    if axis:
        budgets = " or ".join(f"{n:,}" for n in axis)
        return (
            f"{budgets} optimiser steps (`bench.steps`: each row's budget is in its name, `<method>@<steps>`) "
            f"whatever the training-set size ({t.epochs} evaluation rounds), batch {t.batch_size}"
        )
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

    threads = torch.get_num_threads()
    return (
        f"{platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
        f"({threads} thread{'s' if threads != 1 else ''})"
    )


def write_report(
    bench_dir: Path,
    cfg: RunConfig,
    rows: list[BenchRow],
    wall_time_s: float,
    cells_run: Optional[int] = None,
    command: Optional[str] = None,
) -> Path:
    """Write report.md and plots/*.png into ``bench_dir``; returns the report path."""
    plots = bench_dir / "plots"
    plots.mkdir(exist_ok=True)
    methods = list(cfg.methods)
    best = best_student_cell(rows, cfg.train.select_metric)
    _write_plots(plots, rows, methods, best)
    lines = [*_intro(cfg), "## Verdict", "",
             verdict_markdown(rows, methods)
             or "No method recorded a validation AUC: nothing to choose from (cells from an older version).", "",
             "Every choice above is made on the validation split; the test split only measures it. ✓ the paired 95% "
             "interval lies above 0, ✗ below.", "",
             "## Results", "", results_markdown(rows, methods)]  # fmt: skip
    variants = [f"`{name}` = {v}" for name, v in cfg.bench.variants.items() if name in methods]
    if variants:
        lines += ["Variants: " + "; ".join(variants) + ".", ""]
    ref = published_line(cfg.data.source)
    if ref:
        lines += [ref, ""]
    paired, fm_rows = paired_markdown(rows, methods), _branch_rows(rows)
    if paired:
        lines += ["## Paired comparisons", "", paired]
    if fm_rows:
        lines += ["### Non-deployed FM branches (reported by their methods)", "", fm_rows, ""]
    budgets = budget_markdown(rows, methods)
    if budgets:
        lines += ["## Step budgets", "", budgets, "", "![AUC vs budget](plots/auc_vs_budget.png)", ""]
    convergence = convergence_markdown(rows, methods)
    if convergence:
        lines += ["## Convergence", "", convergence, ""]
    lines += _provenance(rows, wall_time_s, cells_run, command, best is not None)
    path = bench_dir / "report.md"
    write_text(path, "\n".join(lines) + "\n")
    return path


def _write_plots(plots: Path, rows: list[BenchRow], methods: list[str], best: Optional[BenchRow]) -> None:
    plots_module.plot_accuracy_vs_cost(plots / "accuracy_vs_cost.png", rows, methods)
    plots_module.plot_accuracy_vs_fraction(plots / "accuracy_vs_fraction.png", rows, methods)
    plots_module.plot_size_latency(plots / "student_vs_fm_size_latency.png", rows)
    plots_module.plot_training_curves(plots / "training_curves.png", rows, methods)
    plots_module.plot_auc_vs_budget(plots / "auc_vs_budget.png", rows)  # with a budget axis only
    if best:
        plots_module.plot_confusion(plots / "confusion_best_student.png", best, class_names(rows))


def _intro(cfg: RunConfig) -> list[str]:
    """What the bench trained and which checkpoint each cell reports."""
    return [
        f"# reprodistill bench: {cfg.name or 'bench'}",
        "",
        f"Data `{cfg.data.source}`; teacher `{cfg.teacher.name}`; student `{cfg.student.name}`; {_budget(cfg)}, "
        f"{cfg.train.optimizer} lr {cfg.train.lr}, class weights {cfg.train.class_weights}; seeds {cfg.bench.seeds}; "
        f"fractions {cfg.bench.fractions} (a fraction's subset is drawn per seed; val and test are fixed). "
        "Test metrics of the deployed model, mean ± sample std over seeds. Transfer cost = the method's training time "
        "+ the FM feature pass its cached features needed + its preparation (probe fit, stage 1).",
        "",
        f"Reported checkpoint: each cell's best.pt, {selection_rule_text(cfg.train.select_metric)}"
        "; the test split never chooses anything. The confusion matrix below, `export` and `predict` use the same "
        "rule. A row flagged ONE-CLASS predicts (nearly) one class for the whole test split: a degenerate predictor, "
        "not a result; the majority-class row shows what such a row is worth.",
        "",
    ]


def _provenance(
    rows: list[BenchRow], wall_time_s: float, cells_run: Optional[int], command: Optional[str], confusion: bool
) -> list[str]:
    """The report's "How this was made": command, commits, machine, time, and the plots."""
    from reprodistill.engine.environment import git_sha

    compute_s = sum(r.value("transfer_s") for r in rows if math.isfinite(r.value("transfer_s")))
    kept = cells_trained_here(cells_run, len(rows))
    lines = [
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
    if confusion:
        lines.append("![confusion matrix of the best student](plots/confusion_best_student.png)")
    return lines


def cells_trained_here(cells_run: Optional[int], cells: int) -> str:
    """The report's clause on how many of the cells this invocation trained ('' when not known)."""
    if cells_run is None:
        return ""
    if cells_run >= cells:
        return f", all {cells} cells trained by this command"
    return f", {cells_run} of {cells} cells trained by this command, the rest earlier or by other processes"


def _cell_commits(rows: list[BenchRow]) -> list[str]:
    """Report lines naming the commits the cells trained at and, where ``--retest`` ran, were re-tested at."""
    lines = []
    for what, counts in zip(("trained", "re-tested (stored checkpoints, no training)"), cell_commits(rows)):
        if counts:
            lines.append(f"- Cells {what} at: " + ", ".join(_commit_label(c, n) for c, n in sorted(counts.items())))
    return lines


def _commit_label(commit: str, cells: int) -> str:
    """`sha` (n), or `sha` with uncommitted edits (n)."""
    sha, _, rest = commit.partition(" ")
    return f"`{sha}`{' ' + rest if rest else ''} ({cells})"


def _branch_rows(rows: list[BenchRow]) -> str:
    """Table of branches such as RD's reprogrammed FM or the KD baselines' probed FM (mean ± std over seeds), with
    their validation AUC where every seed's cell stored it, so a teacher can be judged on the split that chooses."""
    vals: dict[tuple[str, str, float], list[tuple[float, float, float]]] = defaultdict(list)
    for r in rows:
        for branch, m in ((test_metrics(r) or {}).get("extra") or {}).items():
            val_auc = r.val_branches.get(branch, {}).get("auc", math.nan)
            vals[(r.method, branch, r.fraction)].append((val_auc, m["accuracy"], m["auc"]))
    if not vals:
        return ""
    out = [
        "| method | branch | fraction | seeds | val AUC | test acc | test AUC |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for (m, b, f), v in sorted(vals.items(), key=lambda kv: (-kv[0][2], kv[0][0])):
        a = np.array(v)
        std = a.std(0, ddof=1) if len(v) > 1 else np.zeros(3)
        val, acc, auc = (_pm((a[:, i].mean(), std[i]), len(v)) for i in range(3))
        val = "" if np.isnan(a[:, 0]).any() else val  # older cells stored no branch validation scores
        out.append(f"| {m} | {b} | {f:g} | {len(v)} | {val} | {acc} | {auc} |")
    return "\n".join(out)


__all__ = ["paired_markdown", "results_markdown", "write_report"]
