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
