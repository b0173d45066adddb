"""Is a row's balanced accuracy its ranking or its operating point? Per bench cell of a two-class task: the test
balanced accuracy at the default decision (the most probable class, p1 >= 0.5) and at a threshold on p1 chosen on
validation (the one with the best validation balanced accuracy, the closest to 0.5 among ties), from the cells'
``val_predictions.csv`` and ``test_predictions.csv``; nothing is trained or loaded but those files.

    python benchmarks/operating_point.py results/pneumonia-10-budget
    python benchmarks/operating_point.py results/breast-10-decisive --pair rd-unl-mix@300 fixmatch-unl@1500

Cells trained before the run folder kept validation predictions have none: `reprodistill bench ... --retest` on the
machine that holds their best.pt writes them (the stored metrics stay as they were). Prints each row's mean test
AUC and balanced accuracy at both operating points, then the paired difference of each --pair at both.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np


def read_predictions(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(labels, p1) of a two-class predictions file."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "p2" in rows[0]:
        raise SystemExit(f"{path}: not a two-class task; an operating point is a threshold on p1")
    return np.array([int(r["label"]) for r in rows]), np.array([float(r["p1"]) for r in rows])


def balanced_accuracy(labels: np.ndarray, positive: np.ndarray) -> float:
    """Mean of the two classes' recalls."""
    return float(((positive[labels == 1]).mean() + (~positive[labels == 0]).mean()) / 2)


def validation_threshold(labels: np.ndarray, p1: np.ndarray) -> float:
    """The threshold on p1 with the best validation balanced accuracy; among equal ones, the closest to 0.5."""
    s = np.unique(p1)
    candidates = np.concatenate([[0.5], (s[1:] + s[:-1]) / 2, [s[0] - 1e-9, s[-1] + 1e-9]])
    scores = np.array([balanced_accuracy(labels, p1 >= t) for t in candidates])
    best = candidates[scores >= scores.max() - 1e-12]
    return float(best[np.argmin(np.abs(best - 0.5))])


def cell_scores(method_dir: Path) -> dict[str, float] | None:
    """Test AUC and balanced accuracy at 0.5 and at the validation threshold of one cell (None without val files)."""
    from reprodistill.util.metrics import binary_auc

    if not (method_dir / "val_predictions.csv").is_file():
        return None
    yv, pv = read_predictions(method_dir / "val_predictions.csv")
    yt, pt = read_predictions(method_dir / "test_predictions.csv")
    t = validation_threshold(yv, pv)
    return {
        "auc": binary_auc(pt, yt == 1),
        "bal_default": balanced_accuracy(yt, pt >= 0.5),
        "bal_val_threshold": balanced_accuracy(yt, pt >= t),
        "threshold": t,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bench_dir", type=Path)
    p.add_argument("--pair", nargs=2, action="append", default=[], metavar=("A", "B"), help="rows to compare, A - B")
    args = p.parse_args()
    from reprodistill.bench.stats import format_paired, interval

    table: dict[str, dict[int, dict[str, float]]] = {}
    missing = 0
    for result in sorted(args.bench_dir.glob("cells/*/frac*-seed*/*/result.json")):
        scores = cell_scores(result.parent)
        if scores is None:
            missing += 1
            continue
        row, seed = result.parent.parent.parent.name, int(result.parent.parent.name.split("seed")[1])
        table.setdefault(row, {})[seed] = scores
    if missing:
        print(f"{missing} cell(s) without val_predictions.csv left out (see --help: bench --retest writes them)")
    if not table:
        return 1
    print(f"{'row':24s} {'n':>3s} {'test AUC':>9s} {'bal@0.5':>8s} {'bal@val-thr':>12s} {'thresholds':>14s}")
    for row, seeds in sorted(table.items()):
        m = {k: np.mean([s[k] for s in seeds.values()]) for k in ("auc", "bal_default", "bal_val_threshold")}
        ts = [s["threshold"] for s in seeds.values()]
        print(
            f"{row:24s} {len(seeds):3d} {m['auc']:9.3f} {m['bal_default']:8.3f} {m['bal_val_threshold']:12.3f} "
            f"{min(ts):6.3f}-{max(ts):.3f}"
        )
    for a, b in args.pair:
        common = sorted(set(table.get(a, {})) & set(table.get(b, {})))
        if not common:
            print(f"{a} - {b}: no seed in common")
            continue
        for key in ("bal_default", "bal_val_threshold"):
            d = np.array([table[a][s][key] - table[b][s][key] for s in common])
            print(f"{a} - {b}, test {key} ({len(common)} seeds): {format_paired(interval(d))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
