import numpy as np
import pytest
from sklearn import metrics as skm

from reprodistill.engine.metrics import binary_auc, classification_metrics


@pytest.mark.parametrize("k, n, seed", [(2, 200, 0), (2, 37, 1), (3, 150, 2), (5, 300, 3)])
def test_metrics_match_sklearn(k, n, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[labels] * rng.random((n, 1))
    logits = np.round(logits, 1)  # create ties for the AUC rank statistic
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    preds = probs.argmax(1)
    m = classification_metrics(probs, labels)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(labels, preds))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(labels, preds))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(labels, preds, average="macro"))
    expected_auc = (
        skm.roc_auc_score(labels, probs[:, 1])
        if k == 2
        else skm.roc_auc_score(labels, probs, multi_class="ovr", average="macro")
    )
    assert m["auc"] == pytest.approx(expected_auc)
    assert np.array_equal(m["confusion_matrix"], skm.confusion_matrix(labels, preds, labels=range(k)))
    p, r, f, s = skm.precision_recall_fscore_support(labels, preds, labels=range(k), zero_division=0)
    assert np.allclose(m["per_class"]["recall"], r) and np.allclose(m["per_class"]["f1"], f)


def test_auc_edge_cases():
    assert binary_auc(np.array([0.1, 0.2, 0.3]), np.array([False, True, True])) == 1.0
    assert binary_auc(np.array([0.5, 0.5]), np.array([False, True])) == 0.5
    assert np.isnan(binary_auc(np.array([0.5, 0.6]), np.array([True, True])))


def test_hand_computed_binary_example():
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.8, 0.2]])
    labels = np.array([0, 0, 1, 1])
    m = classification_metrics(probs, labels)
    # predictions 0,1,1,0: one right per class
    assert m["accuracy"] == 0.5 and m["balanced_accuracy"] == 0.5
    assert m["confusion_matrix"] == [[1, 1], [1, 1]]
    # positive scores 0.7, 0.2 vs negative scores 0.1, 0.6: pairs won (0.7>0.1, 0.7>0.6, 0.2>0.1) = 3 of 4
    assert m["auc"] == 0.75
