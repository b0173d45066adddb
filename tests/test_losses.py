"""Golden-value tests of the distillation losses against hand computations."""

import math

import numpy as np
import pytest
import torch

from reprodistill.distill import cka, cka_loss, kd_loss


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
