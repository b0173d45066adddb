"""``reprodistill bench``: a grid of methods x seeds x data fractions on one data set, with a report and plots."""

from reprodistill.bench.grid import BenchResult, Cell, bench_cells, run_bench

__all__ = ["BenchResult", "Cell", "bench_cells", "run_bench"]
