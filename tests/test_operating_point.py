"""benchmarks/operating_point.py: the validation-chosen decision threshold of a two-class task."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_spec = importlib.util.spec_from_file_location(
    "operating_point", Path(__file__).parents[1] / "benchmarks" / "operating_point.py"
)
op = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(op)


def test_threshold_separates_what_one_half_does_not():
    # every positive above 0.8, every negative at 0.6-0.7: at 0.5 all negatives are called positive
    labels = np.array([0, 0, 0, 1, 1, 1])
    p1 = np.array([0.6, 0.65, 0.7, 0.85, 0.9, 0.95])
    assert op.balanced_accuracy(labels, p1 >= 0.5) == pytest.approx(0.5)
    t = op.validation_threshold(labels, p1)
    assert 0.7 < t < 0.85 and op.balanced_accuracy(labels, p1 >= t) == 1.0


def test_threshold_keeps_one_half_when_nothing_is_better():
    labels = np.array([0, 1, 0, 1])
    p1 = np.array([0.2, 0.8, 0.3, 0.9])  # 0.5 already separates; so does anything in (0.3, 0.8)
    assert op.validation_threshold(labels, p1) == 0.5


def test_balanced_accuracy_by_hand():
    labels = np.array([0, 0, 0, 0, 1, 1])
    positive = np.array([True, False, False, False, True, False])  # recall 3/4 and 1/2
    assert op.balanced_accuracy(labels, positive) == pytest.approx((0.75 + 0.5) / 2)


def test_student_ensemble_scores_the_mean_of_the_two_students_probabilities(tmp_path, monkeypatch):
    """Two students each wrong on a different image: the mean of their probabilities ranks both right."""
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "benchmarks"))
    spec = importlib.util.spec_from_file_location(
        "student_ensemble", Path(__file__).parents[1] / "benchmarks" / "student_ensemble.py"
    )
    ens = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ens)
    labels = [0, 0, 1, 1]
    p1 = {"a": [0.1, 0.7, 0.6, 0.9], "b": [0.65, 0.1, 0.3, 0.9]}  # a ranks image 1 too high, b image 0
    for row, probs in p1.items():
        for seed in (0, 1):
            folder = tmp_path / "cells" / row / f"frac0.1-seed{seed}" / "m"
            folder.mkdir(parents=True)
            for split in ("val", "test"):
                lines = ["index,path,label,predicted,p0,p1"] + [
                    f"{i},,{y},{int(p >= 0.5)},{1 - p:.2f},{p:.2f}" for i, (y, p) in enumerate(zip(labels, probs))
                ]
                (folder / f"{split}_predictions.csv").write_text("\n".join(lines) + "\n")
    table = ens.seed_table(tmp_path, "a", "b")
    assert sorted(table) == [0, 1]
    # AUC: a and b each order 3 of the 4 (negative, positive) pairs; the mean (0.375, 0.4, 0.45, 0.9) orders all
    assert [table[0][k][1] for k in ("A", "B", "pair")] == pytest.approx([0.75, 0.75, 1.0])
    # balanced accuracy at 0.5: a (0.5 + 1) / 2, b (0.5 + 0.5) / 2, the mean (1 + 0.5) / 2
    assert [table[0][k][2] for k in ("A", "B", "pair")] == pytest.approx([0.75, 0.5, 0.75])
    # three classes: each student puts one image in the wrong class; their mean classifies all three right
    probs = {"a": [[0.6, 0.3, 0.1], [0.1, 0.4, 0.5], [0.1, 0.2, 0.7]],
             "b": [[0.4, 0.5, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]]}  # fmt: skip
    for row, rows in probs.items():
        folder = tmp_path / "three" / "cells" / row / "frac0.1-seed0" / "m"
        folder.mkdir(parents=True)
        for split in ("val", "test"):
            lines = ["index,path,label,predicted,p0,p1,p2"] + [
                f"{i},,{i},{int(np.argmax(p))}," + ",".join(map(str, p)) for i, p in enumerate(rows)
            ]
            (folder / f"{split}_predictions.csv").write_text("\n".join(lines) + "\n")
    three = ens.seed_table(tmp_path / "three", "a", "b")[0]
    assert [three[k][2] for k in ("A", "B", "pair")] == pytest.approx([2 / 3, 2 / 3, 1.0])
    assert three["pair"][1] == pytest.approx(1.0)  # macro one-vs-rest AUC
