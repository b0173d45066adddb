"""Better teacher heads from the frozen FM's cached features (reprogram/teacher_heads.py): soft-target probe fits,
label spreading, self-training, the ensemble as one linear head, and the choice on validation."""

import pytest
import torch
import torch.nn.functional as F
from conftest import build_method
from test_kd_baselines import _Split

from reprodistill.config import RunConfig
from reprodistill.data.sources import UNLABELLED
from reprodistill.methods import MethodContext
from reprodistill.reprogram.probe import _cross_entropy, fit_linear_probe
from reprodistill.reprogram.teacher_heads import (
    Features,
    TeacherHeadSettings,
    candidate_heads,
    fit_teacher_head,
    label_spreading,
    mean_head,
)


def _xor_clusters(n_l: int, n_u: int, seed: int = 0, dim: int = 3) -> Features:
    """Four tight clusters in ``dim`` dims at (+-3, +-3, 0, ...), class = XOR of the two signs (no linear map separates
    them): ``n_l`` labelled points (cycling over the clusters), ``n_u`` unlabelled ones and 200 for validation."""
    g = torch.Generator().manual_seed(seed)
    signs = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, -1.0], [-1.0, 1.0]])  # classes 0, 1, 0, 1

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        c = torch.arange(n) % 4
        x = 0.3 * torch.randn(n, dim, generator=g)
        x[:, :2] += 3 * signs[c]
        return x, c % 2

    (xl, yl), (xu, _), (xv, yv) = draw(n_l), draw(n_u), draw(200)
    return Features(xl, yl, xu, (xv, yv))


def _biased_labels(n_u: int, seed: int = 0) -> Features:
    """Two long parallel clusters in 4 dims (class = the sign of dim 0, +-1.5; dim 1 spread with std 4 in both), and
    four labelled points at the far ends (class 0 at dim 1 = -6, class 1 at +6), so that the labelled points alone
    point a linear probe along dim 1, and only the unlabelled images show the classes' real boundary."""
    g = torch.Generator().manual_seed(seed)

    def draw(n: int, y: torch.Tensor, along: torch.Tensor) -> torch.Tensor:
        x = 0.3 * torch.randn(n, 4, generator=g)
        x[:, 0] += 3 * y - 1.5
        x[:, 1] = along
        return x

    yl = torch.tensor([0, 0, 1, 1])
    xl = draw(4, yl, torch.tensor([-6.0, -5.5, 5.5, 6.0]))
    yu, yv = torch.arange(n_u) % 2, torch.arange(200) % 2
    xu = draw(n_u, yu, 4 * torch.randn(n_u, generator=g))
    xv = draw(200, yv, 4 * torch.randn(200, generator=g))
    return Features(xl, yl, xu, (xv, yv))


def test_soft_targets_of_one_hot_rows_give_the_class_weighted_cross_entropy():
    logits = torch.tensor([[2.0, 0.0], [0.5, 1.5], [0.0, -1.0]])
    y, w = torch.tensor([0, 1, 1]), torch.tensor([1.0, 3.0])
    hard = _cross_entropy(logits, y, w)
    soft = _cross_entropy(logits, F.one_hot(y, 2).float(), w)
    # by hand: sum_i w_{y_i} (-log p_i(y_i)) / sum_i w_{y_i}
    logp = logits.log_softmax(-1)
    by_hand = -(1.0 * logp[0, 0] + 3.0 * logp[1, 1] + 3.0 * logp[2, 1]) / 7.0
    assert torch.allclose(hard, by_hand) and torch.allclose(soft, by_hand)
    # a half-half target costs the mean of the two classes' losses, weighted
    half = _cross_entropy(logits[:1], torch.tensor([[0.5, 0.5]]), w)
    assert torch.allclose(half, -(0.5 * logp[0, 0] + 1.5 * logp[0, 1]) / 2.0)


def test_a_probe_fitted_on_soft_targets_follows_them():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 3, generator=g)
    p = torch.sigmoid(2 * x[:, 0])  # the true P(class 1) rises along the first feature
    probe = fit_linear_probe(x, torch.stack([1 - p, p], 1), 2, l2=1e-4)
    with torch.no_grad():
        fitted = probe(x).softmax(-1)[:, 1]
    assert (fitted - p).abs().max() < 0.05  # a logistic model of the targets recovers them


def test_label_spreading_labels_each_cluster_from_one_labelled_point():
    feats = _xor_clusters(n_l=4, n_u=300)
    spread = label_spreading(feats, 2, TeacherHeadSettings(neighbours=8))
    truth = torch.arange(300) % 2  # cluster i % 4 has class i % 2
    assert spread.shape == (300, 2) and torch.allclose(spread.sum(1), torch.ones(300))
    assert (spread.argmax(1) == truth).float().mean() > 0.95
    # a linear probe on the four labelled points cannot: no linear map separates XOR
    probe = fit_linear_probe(feats.labelled, feats.labels, 2, l2=1e-3)
    with torch.no_grad():
        assert (probe(feats.unlabelled).argmax(1) == truth).float().mean() < 0.8


def test_class_mass_normalisation_keeps_the_labelled_prior():
    feats = _xor_clusters(n_l=40, n_u=200)
    feats.labels[:30] = 0  # labelled prior 0.75 / 0.25 (the clusters no longer agree: the prior must win on mass)
    feats.labels[30:] = 1
    spread = label_spreading(feats, 2, TeacherHeadSettings())
    assert torch.allclose(spread.mean(0), torch.tensor([0.75, 0.25]), atol=0.1)


def test_mean_head_scores_the_mean_of_the_heads_logits():
    feats = _xor_clusters(n_l=20, n_u=100)
    a = fit_linear_probe(feats.labelled, feats.labels, 2)
    b = fit_linear_probe(feats.unlabelled * 3 + 7, torch.arange(100) % 2, 2)  # other statistics
    both = mean_head([a, b])
    x = feats.val[0]
    with torch.no_grad():
        assert torch.allclose(both(x), (a(x) + b(x)) / 2, atol=1e-5)


def test_label_propagation_beats_the_probe_where_the_unlabelled_images_show_the_classes():
    feats = _biased_labels(n_u=400)
    heads = candidate_heads(("self_train", "label_prop", "ensemble"), feats, 2)
    xv, yv = feats.val
    acc = {k: float((h(xv).argmax(1) == yv).float().mean()) for k, h in heads.items()}
    assert acc["label_prop"] > 0.97 and acc["label_prop"] > acc["probe"] + 0.05, acc
    # self-training cannot: its confident guesses come from the misled probe and only confirm it


def test_the_head_chosen_on_validation_is_the_one_that_ranks_validation_best():
    feats = _biased_labels(n_u=400)
    head, rows = fit_teacher_head("val", feats, 2)
    assert [r["name"] for r in rows] == ["probe", "self_train", "label_prop", "ensemble"]
    kept = [r for r in rows if r["kept"]]
    assert len(kept) == 1 and kept[0]["val_auc"] == max(r["val_auc"] for r in rows)
    xv, yv = feats.val
    from reprodistill.util.metrics import classification_metrics

    with torch.no_grad():
        assert classification_metrics(head(xv).log_softmax(-1).numpy(), yv.numpy())["auc"] == kept[0]["val_auc"]


def test_heads_that_learn_from_unlabelled_images_need_them():
    feats = _xor_clusters(n_l=4, n_u=0)
    with pytest.raises(ValueError, match="data.unlabelled"):
        fit_teacher_head("label_prop", feats, 2)
    assert fit_teacher_head("probe", feats, 2)[1] == []  # the plain probe needs none, and records nothing


def test_linear_probe_takes_its_head_from_the_option_and_records_the_candidates(tiny_teacher):
    teacher = tiny_teacher(64)
    ctx = MethodContext(cfg=RunConfig(methods=["linear_probe"]), num_classes=2, teacher=teacher)
    feats = _xor_clusters(n_l=6, n_u=200, seed=2, dim=teacher.feature_dim)
    x = torch.cat([feats.labelled, feats.unlabelled])
    labels = torch.cat([feats.labels, torch.full((200,), UNLABELLED)])
    val = _Split(*reversed(feats.val))
    method = build_method("linear_probe", ctx, teacher_head="label_prop")
    method.prepare(_Split(labels, x), torch.device("cpu"), val=val)
    expected = candidate_heads(("label_prop",), feats, 2)["label_prop"]
    with torch.no_grad():
        assert torch.allclose(method.head(feats.val[0]), expected(feats.val[0]), atol=1e-4)
    assert [(r["name"], r["kept"]) for r in method.prepare_curve()] == [("probe", 0.0), ("label_prop", 1.0)]
