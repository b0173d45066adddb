"""Where the quick job's time goes: one of its cells (default the student alone) run under cProfile, its wall time
split into start-up, data, training steps, validation rounds, checkpoint writes, test-time measurement and the rest.

    python benchmarks/quick_job_profile.py                   # the quick preset's student cell
    python benchmarks/quick_job_profile.py --method fixmatch # another method of the preset

Prints seconds and shares of the cell's wall time (one run; the machine's load shifts the seconds, less the shares).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

# (what, function name, file suffix) whose cumulative time is one phase of a cell
PHASES = (
    ("data: read, check, split", "load_data", "data/sources.py"),
    ("FM features (cached pass)", "_teacher_features", "engine/run.py"),
    ("method preparation (probe fit ...)", "prepare", ""),
    ("validation rounds", "evaluate", "engine/loop.py"),
    ("checkpoint writes (best.pt, last.pt)", "save_checkpoint", "util/checkpoint.py"),
    ("test: metrics, calibration", "retest_or_test", ""),
    ("latency", "latency_ms", "engine/profile.py"),
    ("FLOPs", "flops", "engine/profile.py"),
    ("training (whole fit, validation and checkpoints included)", "fit", "engine/loop.py"),
)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", default="student")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. train.steps=100")
    args = p.parse_args()
    t_import = time.perf_counter()
    from reprodistill.config import load_config
    from reprodistill.engine.run import run

    import_s = time.perf_counter() - t_import
    cfg = load_config("bench", [f"methods=[{args.method}]", *args.overrides])
    profiler = cProfile.Profile()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        profiler.enable()
        run(cfg, run_dir=Path(tmp) / "run")
        profiler.disable()
        wall = time.perf_counter() - t0
    stats = pstats.Stats(profiler)
    cumulative: dict[str, float] = {}
    for (file, _, name), (_, _, _, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
        for what, fn, suffix in PHASES:
            if name == fn and file.endswith(suffix):
                cumulative[what] = cumulative.get(what, 0.0) + ct
    print(f"quick job cell `{args.method}`: wall {wall:.1f} s (+ {import_s:.1f} s importing reprodistill and torch)")
    for what, _, _ in PHASES:
        s = cumulative.get(what, 0.0)
        print(f"  {what:<60} {s:7.1f} s  {s / wall:6.1%}")
    fit = cumulative.get(PHASES[-1][0], 0.0)
    steps = fit - cumulative.get("validation rounds", 0.0) - cumulative.get("checkpoint writes (best.pt, last.pt)", 0.0)
    print(f"  {'training steps alone (fit - validation - checkpoints)':<60} {steps:7.1f} s  {steps / wall:6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
