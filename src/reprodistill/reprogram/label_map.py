"""Output label mapping for FMs with their own class head (FLM / ILM as in ILM-VP, Chen et al., CVPR 2023).

Each target class t is assigned one distinct source class s(t); target logits are the source logits at s(t).
The assignment is greedy one-to-one on the frequency matrix ``F[s, t]`` = number of training images of target class
t that the (prompted) FM predicts as source class s: take the largest entry, assign, strike its row and column,
repeat. Frequency LM computes it once, before training; iterative LM recomputes it at the start of every epoch.
"""

from __future__ import annotations

import torch
from torch import nn


def frequency_matrix(source_logits: torch.Tensor, labels: torch.Tensor, num_target: int) -> torch.Tensor:
    """``F[s, t]``: count of images with target label t whose top source class is s."""
    pred = source_logits.argmax(1)
    freq = torch.zeros(source_logits.shape[1], num_target, dtype=torch.long)
    freq.index_put_((pred.cpu(), labels.cpu()), torch.ones(len(pred), dtype=torch.long), accumulate=True)
    return freq


def greedy_mapping(freq: torch.Tensor) -> torch.Tensor:
    """[K_target] source index of each target class (distinct), greedy on the largest remaining count.

    Ties go to the lowest (source, target) index, so the result is deterministic.
    """
    f = freq.double().clone()
    n_src, n_tgt = f.shape
    if n_src < n_tgt:
        raise ValueError(f"label mapping needs at least as many source classes ({n_src}) as target classes ({n_tgt})")
    mapping = torch.full((n_tgt,), -1, dtype=torch.long)
    for _ in range(n_tgt):
        flat = int(torch.argmax(f))
        s, t = divmod(flat, n_tgt)
        mapping[t] = s
        f[s, :] = -1
        f[:, t] = -1
    return mapping


def fit_mapping(source_logits: torch.Tensor, labels: torch.Tensor, num_target: int) -> torch.Tensor:
    """The greedy one-to-one mapping of the frequency matrix of ``source_logits`` against ``labels``."""
    return greedy_mapping(frequency_matrix(source_logits, labels, num_target))


class MappedHead(nn.Module):
    """An FM's own (frozen) class head followed by a source -> target label mapping kept as a buffer.

    The head is not a submodule: its weights belong to the FM and stay out of this module's state dict.
    """

    mapping: torch.Tensor  # a buffer
    head: nn.Module  # held, not a submodule

    def __init__(self, head: nn.Module, num_target: int) -> None:
        super().__init__()
        object.__setattr__(self, "head", head)
        self.register_buffer("mapping", torch.arange(num_target))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)[:, self.mapping]

    @torch.no_grad()
    def fit(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Re-map from the FM's predictions on ``features`` (pooled, pre-logits) of the training images."""
        self.mapping.copy_(fit_mapping(self.head(features), labels, len(self.mapping)).to(self.mapping.device))
