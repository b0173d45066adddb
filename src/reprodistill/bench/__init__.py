"""``reprodistill bench``: a grid of methods x seeds x data fractions on one data set, with a report and plots.

The grid's names load on first use, so that the CLI reads the launcher registry (:mod:`.launchers`) without
importing torch."""

from typing import Any

__all__ = ["BenchResult", "Cell", "bench_cells", "run_bench"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from reprodistill.bench import grid

        return getattr(grid, name)
    raise AttributeError(f"module 'reprodistill.bench' has no attribute {name!r}")
