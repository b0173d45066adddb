"""The verdict at the top of every bench report: per fraction, the row to deploy and reprodistill's best transfer row
minus the best alternative, each chosen on validation and measured on test, paired over seeds. Which side a row is
on comes from its method's family (:attr:`reprodistill.methods.base.Method.family`), never from a list of names."""

from __future__ import annotations

from reprodistill.bench.rows import METRIC_NAMES, BenchRow
from reprodistill.bench.stats import (
    aggregate,
    best_on_validation,
    choice_metric,
    format_paired,
    fractions,
    mean_val,
    paired_difference,
    separated,
)
from reprodistill.util.metrics import SATURATED_AUC


def families(rows: list[BenchRow]) -> dict[str, str]:
    """Row name -> its method's family."""
    return {r.method: r.family for r in rows}


def verdict_markdown(rows: list[BenchRow], methods: list[str]) -> str:
    """One line per fraction a user can act on: the method to deploy (the best mean validation AUC of every row, or
    balanced accuracy where the validation AUC has saturated, :func:`~reprodistill.bench.stats.choice_metric`; where
    that row deploys the FM, also the best row that ships the small student) and, on the test split, paired over
    seeds, reprodistill's best transfer method (family ``transfer``: RD / DRD / TDMR, any variant, chosen on
    validation) minus the best alternative (every other family: the student alone or pretrained, semi-supervised, KD
    and PEFT rows, chosen on validation the same way; where that is a PEFT row, which ships the FM, also minus the
    best small-model one). Where the paired validation difference between those two does not lie above 0, the line
    says validation cannot separate them (on BreastMNIST 10% RD and FixMatch were 0.002 apart on one CPU and tied to
    four decimals on another)."""
    agg, family = aggregate(rows), families(rows)
    out = []
    for frac in fractions(rows):
        present = [m for m in methods if (m, frac) in agg]
        small = [m for m in present if agg[(m, frac)].deploys == "student"]
        others = [m for m in present if family[m] != "transfer"]
        metric = choice_metric(rows, present, frac)
        name = "AUC" if metric == "auc" else METRIC_NAMES[metric]
        ours = best_on_validation(rows, [m for m in present if family[m] == "transfer"], frac, metric)
        alt = best_on_validation(rows, others, frac, metric)
        pick = best_on_validation(rows, [m for m in (ours, alt) if m], frac, metric)
        if pick is None:
            continue
        what = f"{agg[(pick, frac)].deploys}, {agg[(pick, frac)].mean('params') / 1e6:.2f}M params"
        val = {m: f"{mean_val(rows, m, frac, metric):.4f}" for m in present}
        line = f"- **Fraction {frac:g}: deploy `{pick}`** ({what}; mean validation {name} {val[pick]})"
        if metric != "auc":  # say which metric chose, and why
            best_auc = max(mean_val(rows, m, frac) for m in present)
            line += (f"; chosen by validation {name}: the best validation AUC, {best_auc:.4f}, is at or above "
                     f"{SATURATED_AUC:g}, where AUC no longer separates rows")  # fmt: skip
        runner_up = alt if pick == ours else ours
        if runner_up:  # a near tie on a small validation split: the pick could flip with another seed or CPU
            v = paired_difference(rows, pick, runner_up, frac, f"val_{metric}")
            if v and not separated(v):
                line += f"; validation does not separate it from `{runner_up}` (val {name} {format_paired(v)})"
        best_small = best_on_validation(rows, small, frac, metric)
        if pick not in small and best_small:  # the FM itself (a PEFT row): name the best model that is small to ship
            line += (
                f"; if only the small model can be deployed: `{best_small}` (mean validation {name} {val[best_small]})"
            )
        if ours and alt:
            n, text = _test_difference(rows, ours, alt, frac)
            line += (
                f". Test, paired over {n} seed{'s' if n != 1 else ''}, reprodistill's best `{ours}` (val {val[ours]}) "
                f"minus the best alternative `{alt}` (val {val[alt]}): {text}"
            )
            small_alt = best_on_validation(rows, [m for m in others if m in small], frac, metric)
            if alt not in small and small_alt:
                line += f"; minus the best small-model alternative `{small_alt}` (val {val[small_alt]}): "
                line += _test_difference(rows, ours, small_alt, frac)[1]
        out.append(line + ".")
    return "\n".join(out)


def _test_difference(rows: list[BenchRow], a: str, b: str, frac: float) -> tuple[int, str]:
    """(seeds paired, "AUC ..., bal. acc ...") of ``a`` minus ``b`` on the test split."""
    diffs = {k: paired_difference(rows, a, b, frac, k) for k in ("auc", "balanced_accuracy")}
    n = max((d.n for d in diffs.values() if d), default=0)
    return n, f"AUC {format_paired(diffs['auc'])}, bal. acc {format_paired(diffs['balanced_accuracy'])}"
