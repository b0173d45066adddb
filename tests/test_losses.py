"""Golden-value tests of the distillation losses against hand computations."""

import math

import numpy as np
import pytest
import torch

from reprodistill.losses import cka, cka_loss, kd_loss


def test_linear_cka_hand_computed():
    # centred x = [-1.5,-.5,.5,1.5], y = [-1.5,.5,-.5,1.5]: <y,x>^2 / (|x|^2 |y|^2) = 4^2 / (5 * 5) = 0.64
    x = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    y = torch.tensor([[1.0], [3.0], [2.0], [4.0]])
    assert cka(x, y).item() == pytest.approx(0.64, abs=1e-6)
    assert cka_loss(x, y).item() == pytest.approx(0.36, abs=1e-6)


def test_linear_cka_matches_feature_space_formula():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 7)), rng.normal(size=(32, 5))
    xc, yc = x - x.mean(0), y - y.mean(0)
    expected = np.linalg.norm(yc.T @ xc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))
    assert cka(torch.tensor(x), torch.tensor(y)).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
@pytest.mark.parametrize("unbiased", [False, True])
def test_cka_invariances(kernel, unbiased):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 100, generator=g)
    q, _ = torch.linalg.qr(torch.randn(100, 100, generator=g))
    assert cka(x, x, kernel, unbiased=unbiased).item() == pytest.approx(1.0, abs=1e-4)
    assert cka(x, 3.7 * x @ q, kernel, unbiased=unbiased).item() == pytest.approx(1.0, abs=1e-4)  # rotation+scale
    assert cka(x, x[:, :40], kernel, unbiased=unbiased).item() < 0.95  # a real change is seen


def test_cka_of_unrelated_features_is_near_zero():
    g = torch.Generator().manual_seed(1)
    # biased estimator: near 0 once the batch is much larger than the dims
    assert cka(torch.randn(4000, 8, generator=g), torch.randn(4000, 6, generator=g)).item() < 0.01
    # unbiased estimator: near 0 even for a small batch and wide features (biased gives ~0.5 there)
    x, y = torch.randn(64, 100, generator=g), torch.randn(64, 50, generator=g)
    assert abs(cka(x, y, unbiased=True).item()) < 0.06
    assert cka(x, y).item() > 0.3


def test_cka_is_numerically_safe():
    const = torch.ones(16, 4)
    for unbiased in (False, True):
        assert cka(const, torch.randn(16, 3), unbiased=unbiased).item() == 0.0
    big = torch.randn(16, 8, dtype=torch.float16) * 300
    val = cka(big, big.float() * 2)
    assert val.dtype == torch.float32 and val.item() == pytest.approx(1.0, abs=1e-3)
    x = torch.randn(16, 8, requires_grad=True)
    cka_loss(x, torch.randn(16, 4)).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_kd_loss_hand_computed():
    zs = torch.tensor([[0.0, 0.0]])
    zt = torch.tensor([[math.log(3.0), 0.0]])
    # T=1: p_t = (.75,.25), p_s = (.5,.5): KL = .75 ln 1.5 + .25 ln .5
    assert kd_loss(zs, zt, 1.0).item() == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5), abs=1e-6)
    # T=2: p_t = (sqrt3, 1) / (sqrt3 + 1), times T^2 = 4
    p = math.sqrt(3) / (math.sqrt(3) + 1)
    expected = 4 * (p * math.log(2 * p) + (1 - p) * math.log(2 * (1 - p)))
    assert kd_loss(zs, zt, 2.0).item() == pytest.approx(expected, abs=1e-6)
    assert kd_loss(zt, zt, 4.0).item() == pytest.approx(0.0, abs=1e-7)


# ---- KD baseline losses ----------------------------------------------------------------------------------------
from reprodistill.losses import (  # noqa: E402
    at_loss,
    dkd_loss,
    dkd_parts,
    fitnet_loss,
    match_size,
    rkd_angle_loss,
    rkd_distance_loss,
    rkd_loss,
)


def _kl(p, q):
    return float(np.sum(p * np.log(p / q)))


def _softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def test_dkd_hand_computed_three_classes():
    zs, zt, y, t = np.array([1.0, 2.0, 0.5]), np.array([3.0, 0.0, 1.0]), 0, 2.0
    ps, pt = _softmax(zs / t), _softmax(zt / t)
    tckd = _kl(np.array([pt[0], 1 - pt[0]]), np.array([ps[0], 1 - ps[0]])) * t * t
    nckd = _kl(_softmax(zt[1:] / t), _softmax(zs[1:] / t)) * t * t  # distributions over the non-target classes
    got_t, got_n = dkd_parts(torch.tensor(zs[None]), torch.tensor(zt[None]), torch.tensor([y]), t)
    assert got_t.item() == pytest.approx(tckd, rel=1e-5)
    assert got_n.item() == pytest.approx(nckd, rel=1e-5)
    total = dkd_loss(
        torch.tensor(zs[None]), torch.tensor(zt[None]), torch.tensor([y]), alpha=0.5, beta=3.0, temperature=t
    )
    assert total.item() == pytest.approx(0.5 * tckd + 3.0 * nckd, rel=1e-5)


def test_dkd_on_two_classes_is_alpha_times_kd():
    g = torch.Generator().manual_seed(0)
    zs, zt = torch.randn(16, 2, generator=g), torch.randn(16, 2, generator=g)
    y = torch.randint(0, 2, (16,), generator=g)
    tckd, nckd = dkd_parts(zs, zt, y, 4.0)
    assert nckd.item() == pytest.approx(0.0, abs=1e-6)
    assert tckd.item() == pytest.approx(kd_loss(zs, zt, 4.0).item(), rel=1e-5)


def _rkd_reference(s, t):
    """Straight numpy loops over pairs and triplets (independent of the vectorised code)."""

    def huber(a, b):
        d = np.abs(a - b)
        return np.where(d < 1, 0.5 * d**2, d - 0.5).mean()

    def dists(e):
        n = len(e)
        d = np.array([[np.linalg.norm(e[i] - e[j]) for j in range(n)] for i in range(n)])
        return d / d[d > 0].mean()

    def angles(e):
        n, out = len(e), []
        for i in range(n):
            for j in range(n):
                for k in range(n):
                    a, b = e[i] - e[j], e[k] - e[j]
                    na, nb = np.linalg.norm(a), np.linalg.norm(b)
                    out.append(0.0 if na == 0 or nb == 0 else a @ b / (na * nb))
        return np.array(out)

    return huber(dists(s), dists(t)), huber(angles(s), angles(t))


def test_rkd_matches_reference_and_ignores_similarity_transforms():
    t = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    s = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 1.0], [1.0, 3.0]])
    ref_d, ref_a = _rkd_reference(s, t)
    assert rkd_distance_loss(torch.tensor(s), torch.tensor(t)).item() == pytest.approx(ref_d, rel=1e-5)
    assert rkd_angle_loss(torch.tensor(s), torch.tensor(t)).item() == pytest.approx(ref_a, rel=1e-5)
    assert ref_d > 0 and ref_a > 0
    # scaling, rotating and shifting the teacher's embedding changes neither relation
    rot = torch.tensor([[0.6, -0.8], [0.8, 0.6]], dtype=torch.float64)
    moved = 3.0 * torch.tensor(t) @ rot + 5.0
    assert rkd_distance_loss(moved, torch.tensor(t)).item() == pytest.approx(0.0, abs=1e-6)
    assert rkd_angle_loss(moved, torch.tensor(t)).item() == pytest.approx(0.0, abs=1e-6)


def test_rkd_gradient_is_finite_with_duplicate_points():
    s = torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.0, 0.0]], requires_grad=True)
    (rkd_distance_loss(s, torch.randn(3, 5)) + rkd_angle_loss(s, torch.randn(3, 5))).backward()
    assert torch.isfinite(s.grad).all()


def test_attention_transfer_hand_computed():
    # one channel, 1x2 maps: attention = f^2 normalised: [9,16]/sqrt(337) vs [16,9]/sqrt(337)
    s = torch.tensor([[[[3.0, 4.0]]]])
    t = torch.tensor([[[[4.0, 3.0]]]])
    assert at_loss(s, t).item() == pytest.approx((49 + 49) / 337 / 2, rel=1e-6)
    # channel count may differ and the teacher map is resized to the student's
    s2 = torch.rand(2, 8, 4, 4)
    t2 = s2.mean(1, keepdim=True).repeat_interleave(2, -1).repeat_interleave(2, -2).repeat(1, 5, 1, 1)
    assert at_loss(s2, torch.zeros_like(t2)).item() > 0
    assert at_loss(s2, s2.repeat(1, 2, 1, 1)).item() == pytest.approx(0.0, abs=1e-9)


def test_fitnet_loss_resizes_teacher_map():
    t = torch.arange(16.0).view(1, 1, 4, 4)
    pooled = torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]])  # 2x2 block means, by hand
    assert torch.equal(match_size(t, (2, 2)), pooled)
    assert fitnet_loss(pooled + 1.0, t).item() == pytest.approx(1.0)
    assert match_size(t, (8, 8)).shape == (1, 1, 8, 8)


def test_cka_survives_a_common_offset_much_larger_than_the_spread():
    # post-ReLU-like features: offset 100x the spread; the Gram-before-centring form returned 0 here in fp32
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 32, generator=g)
    y = x @ torch.randn(32, 16, generator=g) + 0.1 * torch.randn(64, 16, generator=g)
    reference = cka(x.double(), y.double()).item()
    x_off, y_off = x + 100.0 * x.std(), y + 100.0 * y.std()
    assert reference > 0.5
    assert cka(x_off, y_off).item() == pytest.approx(reference, abs=1e-4)
    xs = x_off.clone().requires_grad_()
    cka_loss(xs, y_off).backward()
    assert xs.grad.abs().sum() > 0


def test_dkd_tckd_is_exact_at_large_margins():
    # a margin of 80 at T=1: p_rest of the student ~ e^-80, far below the old 1e-12 clamp
    s = torch.tensor([[40.0, -40.0]])
    t = torch.tensor([[0.0, 0.0]])
    tckd, _ = dkd_parts(s, t, torch.tensor([0]), temperature=1.0)
    # KL([.5,.5] || [1-e^-80, e^-80]) = .5 log(.5 / (1 - e^-80)) + .5 log(.5 / e^-80) ~ log .5 + 40
    assert tckd.item() == pytest.approx(math.log(0.5) + 40.0, rel=1e-5)


def test_rkd_of_a_batch_of_one_is_zero_not_nan():
    s, t = torch.randn(1, 8, requires_grad=True), torch.randn(1, 5)
    loss = rkd_loss(s, t)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(s.grad).all()


def test_fit_logit_scale_minimises_the_weighted_nll_and_never_sharpens():
    from reprodistill.losses import fit_logit_scale

    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (200,), generator=g)
    # an overconfident teacher: right-ish logits blown up 30x
    logits = 30 * (torch.randn(200, 3, generator=g) + 1.2 * torch.nn.functional.one_hot(labels, 3))
    weight = torch.tensor([1.0, 2.0, 0.5])
    s = fit_logit_scale(logits, labels, weight)

    def nll(scale: float) -> float:
        return float(torch.nn.functional.cross_entropy(scale * logits.double(), labels, weight=weight.double()))

    grid = torch.linspace(1e-4, 1.0, 20001)
    best = grid[torch.tensor([nll(float(v)) for v in grid]).argmin()]
    assert 0 < s < 0.2 and s == pytest.approx(float(best), abs=1e-4)
    assert nll(s) <= min(nll(s * 0.99), nll(s * 1.01))
    separable = torch.tensor([[0.0, 3.0], [3.0, 0.0]])
    assert fit_logit_scale(separable, torch.tensor([1, 0])) == 1.0  # perfectly right: capped, not sharpened


def test_mixture_target_is_the_weighted_mean_of_the_softened_teachers():
    from reprodistill.losses import kd_loss, mixture_target_logits

    a, b = torch.tensor([[60.0, 0.0], [0.0, 2.0]]), torch.tensor([[1.0, 3.0], [4.0, 0.0]])
    z = mixture_target_logits([a, b], [0.5, 0.5], 4.0)
    # by hand: softmax(a/4) row 0 = (1/(1+e^-15), e^-15/(1+e^-15)); softmax(b/4) row 0 = (1/(1+e^0.5), ...)
    p_a0 = 1 / (1 + math.exp(-15.0))
    p_b0 = 1 / (1 + math.exp(0.5))
    assert torch.softmax(z / 4.0, -1)[0, 0].item() == pytest.approx(0.5 * p_a0 + 0.5 * p_b0, abs=1e-6)
    single = mixture_target_logits([a, b], [1.0, 0.0], 4.0)  # a zero-weight teacher drops out
    s = torch.randn(2, 2)
    assert kd_loss(s, single, 4.0).item() == pytest.approx(kd_loss(s, a, 4.0).item(), abs=1e-5)
    with pytest.raises(ValueError, match="sum to 1"):
        mixture_target_logits([a, b], [0.5, 0.6], 4.0)
