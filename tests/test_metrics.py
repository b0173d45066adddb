import numpy as np
import pytest
from sklearn import metrics as skm

from reprodistill.util.metrics import binary_auc, classification_metrics


@pytest.mark.parametrize("k, n, seed", [(2, 200, 0), (2, 37, 1), (3, 150, 2), (5, 300, 3)])
def test_metrics_match_sklearn(k, n, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[labels] * rng.random((n, 1))
    logits = np.round(logits * 4) / 4  # quarter steps: exact in binary floats, so equal scores really tie
    log_probs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    preds = log_probs.argmax(1)
    m = classification_metrics(log_probs, labels)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(labels, preds))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(labels, preds))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(labels, preds, average="macro"))
    # binary AUC ranks the logit margin, one-vs-rest ranks each class's log-probability (both monotone in p)
    expected_auc = (
        skm.roc_auc_score(labels, log_probs[:, 1] - log_probs[:, 0])
        if k == 2
        else np.mean([skm.roc_auc_score(labels == c, log_probs[:, c]) for c in range(k)])
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
    m = classification_metrics(np.log(probs), labels)
    # predictions 0,1,1,0: one right per class
    assert m["accuracy"] == 0.5 and m["balanced_accuracy"] == 0.5
    assert m["confusion_matrix"] == [[1, 1], [1, 1]]
    # positive scores 0.7, 0.2 vs negative scores 0.1, 0.6: pairs won (0.7>0.1, 0.7>0.6, 0.2>0.1) = 3 of 4
    assert m["auc"] == 0.75


def test_auc_ranks_confident_logits_that_float32_probabilities_tie():
    """A confident model's probabilities saturate to 1.0 in float32 (margin > ~16): AUC must rank its logits."""
    import torch

    margins = torch.tensor([20.0, 30.0, 40.0, 50.0, -3.0])  # class-1 logit minus class-0 logit
    labels = np.array([0, 1, 1, 1, 0])
    logits = torch.stack([torch.zeros(5), margins], 1)
    p32 = logits.softmax(-1)[:, 1].numpy()
    assert len(np.unique(p32[:4])) == 1  # the float32 probabilities of the four confident images tie at 1.0
    assert binary_auc(p32, labels == 1) == pytest.approx(0.75)  # tie = half a pair won
    m = classification_metrics(logits.double().log_softmax(-1).numpy(), labels)
    assert m["auc"] == 1.0  # the margins rank every positive above both negatives
    three = torch.cat([logits, torch.full((5, 1), -5.0)], 1)  # one-vs-rest on log-probabilities does not tie either
    m3 = classification_metrics(three.double().log_softmax(-1).numpy(), np.array([0, 1, 1, 1, 2]))
    assert m3["accuracy"] == 0.6


def test_majority_metrics_are_chance_level():
    from reprodistill.engine.sanity import majority_metrics

    m = majority_metrics([10, 30], [40, 60])
    assert m["auc"] == 0.5 and m["accuracy"] == 0.6 and m["balanced_accuracy"] == 0.5
    assert m["confusion_matrix"] == [[0, 40], [0, 60]]
