"""Progress on long work: a tqdm bar on a terminal, and log lines (every 10% or 30 s) when stderr is not one, so a
redirected log of a minutes-long FM pass is never silent."""

from __future__ import annotations

import logging
import sys
import time
from typing import Iterable, Iterator, Optional, TypeVar

# not tqdm.auto: its asyncio class calls iter() on the iterable when the bar is made and again when it is iterated,
# so a DataLoader started twice per round drew one more global-RNG number on a terminal (its base seed) and a run's
# dropout masks, hence its numbers, depended on whether stderr was a terminal
from tqdm.autonotebook import tqdm

log = logging.getLogger("reprodistill")
T = TypeVar("T")


def progress(
    items: Iterable[T],
    desc: str,
    total: Optional[int] = None,
    unit: str = "batch",
    every_s: float = 30.0,
    every_tenth: bool = True,
) -> Iterator[T]:
    """Iterate ``items`` with a progress bar (terminal) or ``log.info`` lines (anything else) every ``every_s`` and,
    with ``every_tenth``, at every 10% (a short loop repeated many times, such as a training round, wants the time
    rule only)."""
    total = total if total is not None else (len(items) if hasattr(items, "__len__") else None)  # type: ignore[arg-type]
    if sys.stderr.isatty():
        yield from tqdm(iter(items), desc=desc, total=total, unit=unit, leave=False)  # one iter(), as below
        return
    t0 = last = time.perf_counter()
    next_pct = 10
    for i, item in enumerate(items, 1):
        yield item
        now = time.perf_counter()
        pct = 100 * i // total if total else 0
        if (every_tenth and total and pct >= next_pct and i < total) or now - last >= every_s:
            eta = f", ~{(now - t0) / i * (total - i):.0f} s left" if total else ""
            rate = i / max(now - t0, 1e-9)
            log.info("%s: %d/%s %s (%d%%, %.2f %s/s, %.0f s%s)", desc, i, total or "?", unit, pct, rate, unit,
                     now - t0, eta)  # fmt: skip
            last = now
            while total and next_pct <= pct:
                next_pct += 10
