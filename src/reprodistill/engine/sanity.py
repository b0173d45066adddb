"""Sanity references for every results table: degenerate-predictor flags, the majority-class row, published figures.

A row whose test predictions are (nearly) all one class is a bug to flag, not a result; the majority-class
predictor shows what such a row is worth; the published reference shows where the task stands in the literature.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from reprodistill.util.metrics import classification_metrics

# A model whose most frequent test prediction takes at least this share of the test set is flagged as one-class.
ONE_CLASS_SHARE = 0.97

# MedMNIST v2 (Yang et al., Scientific Data 2023), Table 3: test AUC / ACC, mean of 3 runs, full training split.
PUBLISHED = {
    "pneumoniamnist": {"model": "ResNet-18 (28)", "auc": 0.944, "accuracy": 0.854},
    "breastmnist": {"model": "ResNet-18 (28)", "auc": 0.901, "accuracy": 0.863},
}
PUBLISHED_SOURCE = "MedMNIST v2 (Yang et al., Sci. Data 2023), Table 3"


def prediction_flags(confusion: Sequence[Sequence[int]]) -> list[str]:
    """Warnings about a confusion matrix (rows true, columns predicted): one-class output, classes never predicted."""
    cm = np.asarray(confusion)
    predicted, support = cm.sum(0), cm.sum(1)
    n = cm.sum()
    flags = []
    if n and predicted.max() / n >= ONE_CLASS_SHARE and len(cm) > 1:
        flags.append(f"ONE-CLASS: {predicted.max() / n:.0%} of predictions are class {int(predicted.argmax())}")
    elif len(cm) > 2:
        never = [int(c) for c in np.flatnonzero((predicted == 0) & (support > 0))]
        if never:
            flags.append(f"never predicts classes {never}")
    return flags


def flag_text(confusion: Sequence[Sequence[int]]) -> str:
    """:func:`prediction_flags` as one table / CSV cell ('' when the predictions look sane)."""
    return "; ".join(prediction_flags(confusion))


def majority_metrics(train_counts: Sequence[int], test_support: Sequence[int]) -> dict[str, Any]:
    """Test metrics of the predictor that always answers the most frequent training class."""
    k = len(test_support)
    labels = np.repeat(np.arange(k), np.asarray(test_support, dtype=int))
    log_probs = np.full((len(labels), k), -50.0)  # finite (not log 0 = -inf) so that equal scores tie
    log_probs[:, int(np.argmax(train_counts))] = 0.0
    return classification_metrics(log_probs, labels)


def published_reference(source: str) -> Optional[dict[str, Any]]:
    """The published figures for a MedMNIST source (``medmnist:<flag>`` or ``<flag>.npz``), else None."""
    name = source.split(":", 1)[1] if source.startswith("medmnist:") else source.rsplit("/", 1)[-1]
    name = name.lower().removesuffix(".npz").removesuffix("_28")
    return PUBLISHED.get(name)


def published_line(source: str) -> str:
    """One labelled markdown line with the published reference, or '' when none is known."""
    ref = published_reference(source)
    if ref is None:
        return ""
    return (
        f"Published reference (not measured here, full training split): {ref['model']} test AUC {ref['auc']:.3f} / "
        f"ACC {ref['accuracy']:.3f}, {PUBLISHED_SOURCE}."
    )
