"""Classification metrics computed from log class probabilities, in numpy (checked against scikit-learn in tests).

Scores are log-probabilities, not probabilities: a float32 softmax rounds every probability within ~1e-7 of 1 to
exactly 1.0 (a logit margin above ~16), so a confident model's test scores tie and its AUC drops although its
ranking is fine (RD's reprogrammed branch, median margin ~50, lost 0.08 AUC that way).
"""

from __future__ import annotations

import math

import numpy as np


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """[K,K] counts; rows are true classes, columns predictions."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (labels, preds), 1)
    return cm


def _rankdata(x: np.ndarray) -> np.ndarray:
    """Average ranks (1-based), ties sharing the mean rank."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    boundaries = np.flatnonzero(np.diff(xs)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(x)]])
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + e + 1) / 2.0
    return ranks


def binary_auc(scores: np.ndarray, positives: np.ndarray) -> float:
    """ROC AUC via the Mann-Whitney U statistic (ties count one half); NaN if one class is absent."""
    n_pos = int(positives.sum())
    n_neg = len(positives) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _rankdata(scores)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def classification_metrics(log_probs: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy, balanced accuracy, macro-F1, AUC (binary, or one-vs-rest macro), per-class report and confusion.

    Args:
        log_probs: [N,K] log class probabilities (log-softmax of the logits); AUC ranks on them (binary: the
            logit margin log p1 - log p0), which never saturates the way float probabilities do.
        labels: [N] integer labels.
    """
    scores = np.asarray(log_probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    k = scores.shape[1]
    preds = scores.argmax(1)
    cm = confusion_matrix(labels, preds, k)
    support = cm.sum(1)
    predicted = cm.sum(0)
    tp = np.diag(cm).astype(np.float64)
    present = support > 0
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=(precision + recall) > 0)
    if k == 2:
        auc = binary_auc(scores[:, 1] - scores[:, 0], labels == 1)
    else:
        per_class = [binary_auc(scores[:, c], labels == c) for c in range(k) if present[c]]
        auc = float(np.mean(per_class)) if per_class else float("nan")
    return {
        "accuracy": float(tp.sum() / max(1, len(labels))),
        "balanced_accuracy": float(recall[present].mean()) if present.any() else float("nan"),
        # sklearn's macro-F1 averages over every class seen in labels or predictions
        "macro_f1": float(f1[present | (predicted > 0)].mean()),
        "auc": auc,
        "per_class": {
            "precision": precision.tolist(),
            "recall": recall.tolist(),
            "f1": f1.tolist(),
            "support": support.tolist(),
        },
        "confusion_matrix": cm.tolist(),
    }


SCALAR_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "auc")


# Under `train.select_metric=last` no round is chosen on validation; methods (the report's best student, export
# without --method) are still compared on validation, by this threshold-free metric.
LAST_ROUND_RANKING = "auc"


def ranking_metric(select: str) -> str:
    """The validation metric that compares checkpoints or methods under ``train.select_metric=select``."""
    return LAST_ROUND_RANKING if select == "last" else select


# Where the best validation AUC reaches this, AUC no longer tells methods apart (on an easy 10-class set a
# validation AUC of 0.9992 against 0.9990 chose FixMatch over RD by noise; PneumoniaMNIST's sits near 0.99):
# methods are then compared by validation balanced accuracy, which still separates.
SATURATED_AUC = 0.99


def separating_metric(metric: str, best_val_auc: float) -> str:
    """The validation metric that compares methods: ``metric``, except that AUC gives way to balanced accuracy
    where the best validation AUC is :data:`SATURATED_AUC` or more."""
    return "balanced_accuracy" if metric == "auc" and best_val_auc >= SATURATED_AUC else metric


def selection_rule_text(select: str) -> str:
    """One sentence for reports: which checkpoint of a method is reported, and why."""
    if select == "last":
        return (
            "the last evaluation round (the end of training, where the default cosine schedule has annealed the "
            "learning rate to 0; no round is chosen on the validation split, whose few images pick under-trained "
            "rounds by chance); methods are compared by "
            f"validation {LAST_ROUND_RANKING} (by validation balanced accuracy where the best validation AUC is "
            f"{SATURATED_AUC:g} or more: AUC saturates there)"
        )
    what = " (class-weighted cross-entropy)" if select == "loss" else ""
    return f"the evaluation round with the best validation {select}{what}"


def selection_score(value: float, select: str) -> float:
    """A validation metric turned higher-is-better for ``train.select_metric=select``: loss negated, NaN (e.g. AUC
    with one class in val) lowest. The one rule behind the report's best student and export (compare the column
    ``val_{ranking_metric(select)}``)."""
    select = ranking_metric(select)
    value = float(value)
    if value != value:
        return -math.inf
    return -value if select == "loss" else value


def round_score(val_metrics: dict[str, float], select: str, round_index: int) -> float:
    """Higher is better: how an evaluation round ranks for best.pt under ``train.select_metric=select``. 'last'
    ranks every newer round higher, so best.pt is the final one; the others use the round's validation metric."""
    return float(round_index) if select == "last" else selection_score(val_metrics[select], select)
