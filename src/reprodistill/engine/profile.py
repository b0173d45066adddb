"""Size, FLOPs, latency and memory of models and runs, for the results table."""

from __future__ import annotations

import resource
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.inference_mode()
def flops(fn, x: torch.Tensor) -> int:
    """Forward FLOPs (multiply-add = 2) of ``fn(x)`` for one input."""
    with FlopCounterMode(display=False) as counter:
        fn(x)
    return int(counter.get_total_flops())


@torch.inference_mode()
def latency_ms(fn, x: torch.Tensor, repeats: int = 10) -> float:
    """Median wall time of ``fn(x)`` in ms after one warm-up call."""
    fn(x)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(x)
        times.append((time.perf_counter() - t) * 1e3)
    return float(sorted(times)[len(times) // 2])
