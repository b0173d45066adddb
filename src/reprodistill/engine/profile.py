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


# How latency_ms measures; the reports print it beside the column.
LATENCY_RULE = "batch 1, one thread, the fastest of up to 20 calls (3 s at most) after warm-up"


@torch.inference_mode()
def latency_ms(fn, x: torch.Tensor, repeats: int = 20, warmup: int = 3, budget_s: float = 3.0) -> float:
    """Wall time of ``fn(x)`` in ms: the fastest of ``repeats`` calls after ``warmup`` calls, on one CPU thread,
    stopping early (after 3 timed calls at least) once ``budget_s`` is spent, so a foundation model costs seconds.

    Other processes only ever add time, so the minimum is the figure load disturbs least (a median of 10 on all
    threads gave 5.6, 9.7 and 266.5 ms for one resnet18 in one report on a busy 2-core machine); one thread
    because the threads of a shared machine are what load takes away. On a GPU the calls are synchronised.
    """
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        for _ in range(warmup):
            fn(x)
            sync()
            if time.perf_counter() - start > budget_s / 4:  # a slow model: one warm-up is enough
                break
        start, times = time.perf_counter(), list[float]()
        while len(times) < repeats and (len(times) < 3 or time.perf_counter() - start < budget_s):
            t = time.perf_counter()
            fn(x)
            sync()
            times.append((time.perf_counter() - t) * 1e3)
        best = min(times)
    finally:
        torch.set_num_threads(threads)
    return best
