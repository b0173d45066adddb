"""Do two rows' students err on different images? Per seed of a bench, the mean of the two students' predicted
probabilities (an ensemble that deploys both) against each alone: validation and test AUC (one-vs-rest macro with
more than two classes) and test balanced accuracy of the most probable class, paired over seeds, from the cells'
``val_predictions.csv`` / ``test_predictions.csv`` only (nothing is trained or loaded).

    python benchmarks/student_ensemble.py results/breast-10-decisive fixmatch-unl@1500 rd-unl-mix@300

A gain of the pair over both says that one student distilled from both teachers could do better than either
(``rd`` with ``co_teacher``: docs/measured.md, "the two students together").
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np


def read_probabilities(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(labels [N], class probabilities [N, K]) of a cell's predictions file (columns label, p0 .. p{K-1})."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SystemExit(f"{path}: no predictions")
    k = sum(1 for c in rows[0] if c[1:].isdigit() and c[0] == "p")
    return np.array([int(r["label"]) for r in rows]), np.array([[float(r[f"p{c}"]) for c in range(k)] for r in rows])


def scores(labels: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
    """(AUC, balanced accuracy of the most probable class) of ``probs``, as the bench scores a student."""
    from reprodistill.util.metrics import classification_metrics

    m = classification_metrics(np.log(np.clip(probs, 1e-12, 1.0)), labels)
    return m["auc"], m["balanced_accuracy"]


def seed_table(bench: Path, a: str, b: str) -> dict[int, dict[str, tuple[float, float, float]]]:
    """seed -> {A, B, pair: (val AUC, test AUC, test balanced accuracy)} for the seeds both rows hold."""
    table = {}
    for cell in sorted((bench / "cells" / a).glob("frac*-seed*")):
        other = bench / "cells" / b / cell.name
        files = {r: {s: next(c.glob(f"*/{s}_predictions.csv"), None) for s in ("val", "test")} for r, c in
                 (("A", cell), ("B", other))}  # fmt: skip
        if any(f is None for r in files.values() for f in r.values()):
            continue
        out = {}
        p = {r: {s: read_probabilities(f) for s, f in files[r].items()} for r in files}
        for name, val, test in (
            ("A", p["A"]["val"][1], p["A"]["test"][1]),
            ("B", p["B"]["val"][1], p["B"]["test"][1]),
            ("pair", (p["A"]["val"][1] + p["B"]["val"][1]) / 2, (p["A"]["test"][1] + p["B"]["test"][1]) / 2),
        ):
            out[name] = (scores(p["A"]["val"][0], val)[0], *scores(p["A"]["test"][0], test))
        table[int(cell.name.split("seed")[1])] = out
    return table


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bench_dir", type=Path)
    p.add_argument("a")
    p.add_argument("b")
    args = p.parse_args()
    from reprodistill.bench.stats import format_paired, interval

    table = seed_table(args.bench_dir, args.a, args.b)
    if not table:
        raise SystemExit(f"{args.bench_dir}: no seed with both rows' validation and test predictions")
    names = {"A": args.a, "B": args.b, "pair": f"mean of the two ({len(table)} seeds)"}
    metrics = ("val AUC", "test AUC", "test bal. acc")
    print("| row | " + " | ".join(metrics) + " |\n|---|" + "---:|" * len(metrics))
    for key, name in names.items():
        means = np.mean([table[s][key] for s in table], axis=0)
        print(f"| {name} | " + " | ".join(f"{m:.3f}" for m in means) + " |")
    for key in ("A", "B"):
        for i, metric in enumerate(metrics):
            d = np.array([table[s]["pair"][i] - table[s][key][i] for s in sorted(table)])
            print(f"pair - {names[key]}, {metric}: {format_paired(interval(d))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
