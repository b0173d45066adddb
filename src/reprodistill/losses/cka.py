"""Minibatch Centered Kernel Alignment (Kornblith et al., 2019) as a similarity and a distillation loss.

Linear CKA of n x d1 and n x d2 feature matrices X, Y with column-centred X~, Y~::

    CKA = ||Y~^T X~||_F^2 / (||X~^T X~||_F * ||Y~^T Y~||_F)

computed through the n x n Gram matrices (centred K = X~X~^T, M = Y~Y~^T: ||Y~^T X~||_F^2 = <K, M>), cheaper than
the d x d form whenever the batch is smaller than the feature dims. Everything runs in fp32 (also under autocast),
with an eps in the denominator so constant features give 0 instead of NaN. Features are column-centred before the
Gram matrices are formed (exact for every estimator here, and what keeps a large common offset from cancelling the
signal in fp32).
"""

from __future__ import annotations

import torch

EPS = 1e-8


def _gram_linear(x: torch.Tensor) -> torch.Tensor:
    return x @ x.T


def _hsic_biased(k: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """<HKH, HLH>: the plain (biased) estimator; equals ||Y~^T X~||_F^2 for linear kernels."""
    return (_center(k) * _center(m)).sum()


def _hsic_unbiased(k: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Song et al. (2012) unbiased HSIC: unrelated features score ~0 even when the batch is smaller than the dims."""
    n = k.shape[0]
    if n < 4:
        raise ValueError("unbiased CKA needs a batch of at least 4 samples")
    k = k - torch.diag(torch.diag(k))
    m = m - torch.diag(torch.diag(m))
    km = k @ m
    return (km.trace() + k.sum() * m.sum() / ((n - 1) * (n - 2)) - 2.0 * km.sum() / (n - 2)) / (n * (n - 3))


def _gram_rbf(x: torch.Tensor, sigma_frac: float) -> torch.Tensor:
    """Gaussian kernel with bandwidth ``sigma_frac`` x the median pairwise distance (scale-invariant)."""
    d2 = torch.cdist(x, x).pow(2)
    off_diag = d2[~torch.eye(len(x), dtype=torch.bool, device=x.device)]
    median = off_diag.median().clamp_min(EPS) if off_diag.numel() else d2.new_tensor(1.0)
    return torch.exp(-d2 / (2.0 * sigma_frac**2 * median))


def _center(k: torch.Tensor) -> torch.Tensor:
    """H K H with H = I - 11^T/n."""
    return k - k.mean(dim=0, keepdim=True) - k.mean(dim=1, keepdim=True) + k.mean()


def cka(
    x: torch.Tensor, y: torch.Tensor, kernel: str = "linear", sigma_frac: float = 0.8, unbiased: bool = False
) -> torch.Tensor:
    """CKA similarity in [0, 1] between two batches of features (any trailing shape; flattened per sample).

    Args:
        x: [n, ...] features.
        y: [n, ...] features of the same n samples.
        kernel: 'linear' or 'rbf'.
        sigma_frac: RBF bandwidth as a fraction of the median pairwise distance.
        unbiased: Use the unbiased HSIC estimator. The biased one (the formula above) overstates the similarity of
            unrelated features when the batch is not much larger than the feature dims (e.g. ~0.5 for n=64, d=100).
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA needs the same number of samples, got {x.shape[0]} and {y.shape[0]}")
    with torch.autocast(device_type=x.device.type, enabled=False):
        # centre the features before any Gram matrix: with a common offset much larger than the spread (e.g. 50x,
        # post-ReLU maps), x x^T is dominated by the offset and fp32 rounding swallows the signal (CKA came back 0)
        x = x.reshape(len(x), -1).float()
        y = y.reshape(len(y), -1).float()
        x = x - x.mean(0, keepdim=True)
        y = y - y.mean(0, keepdim=True)
        if kernel == "linear":
            k, m = _gram_linear(x), _gram_linear(y)
        elif kernel == "rbf":
            k, m = _gram_rbf(x, sigma_frac), _gram_rbf(y, sigma_frac)
        else:
            raise ValueError(f"unknown CKA kernel {kernel!r}; use 'linear' or 'rbf'")
        hsic = _hsic_unbiased if unbiased else _hsic_biased
        denom = (hsic(k, k).clamp_min(0.0) * hsic(m, m).clamp_min(0.0)).sqrt()
        # A representation with no variance (e.g. constant features) has HSIC ~ rounding noise: call it 0, not noise/eps
        tol = 1e-5 * k.norm() * m.norm() / len(x) ** 2 + EPS
        return torch.where(denom > tol, hsic(k, m) / (denom + EPS), torch.zeros_like(denom))


def cka_loss(
    x: torch.Tensor, y: torch.Tensor, kernel: str = "linear", sigma_frac: float = 0.8, unbiased: bool = False
) -> torch.Tensor:
    """1 - CKA(x, y): 0 when the two representations agree up to rotation and isotropic scaling."""
    return 1.0 - cka(x, y, kernel, sigma_frac, unbiased)
