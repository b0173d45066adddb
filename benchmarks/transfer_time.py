"""RD transfer wall time: cached FM features vs online (uncached) FM vs the student alone, in one run.

    python benchmarks/transfer_time.py --fraction 0.1 --epochs 3
    python benchmarks/transfer_time.py --epochs 20 --online-epochs 2   # full data; online time scaled per epoch

The physical limit of a transfer is one FM pass over the data plus training the student alone; the script prints
cached RD / limit (target <= 1.15) and online RD / cached RD (target >= 5). Each variant starts from an empty
feature cache, so the cached time includes its FM pass. An online (uncached) RD epoch runs the FM over every
training and validation image, so its cost is the same every epoch: with ``--online-epochs N < --epochs`` the
online run trains N epochs and its time is scaled to ``--epochs`` (and says so), which saves most of an hour on CPU.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from reprodistill.config import load_config
from reprodistill.engine.profile import peak_rss_mb
from reprodistill.engine.run import run


def timed(overrides: list[str], root: Path, name: str) -> tuple[float, float]:
    """(wall seconds of the whole run, seconds spent on cached FM features)."""
    cfg = load_config("default", overrides + [f"teacher.cache_dir={root / name / 'cache'}"])
    t = time.perf_counter()
    res = run(cfg, run_dir=root / name / "run")
    return time.perf_counter() - t, res.teacher_feature_time_s


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fraction", type=float, default=1.0)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--online-epochs", type=int, default=None, help="epochs of the online run (default: --epochs)")
    p.add_argument("--teacher", default="merlin")
    p.add_argument("--student", default="resnet18")
    args = p.parse_args()
    common = [
        f"data.fraction={args.fraction}",
        f"train.epochs={args.epochs}",
        "train.steps=null",
        f"teacher.name={args.teacher}",
        f"student.name={args.student}",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        student, _ = timed(common + ["methods=[student]"], root, "student")
        cached, fm_pass = timed(common + ["methods=[rd]"], root, "rd_cached")
        n_online = args.online_epochs or args.epochs
        online_common = [c for c in common if not c.startswith("train.epochs=")] + [f"train.epochs={n_online}"]
        online, _ = timed(online_common + ["methods=[rd]", "teacher.features=online"], root, "rd_online")
        online_measured = online
        online *= args.epochs / n_online
    limit = fm_pass + student
    print(f"student alone      : {student:8.1f} s")
    print(f"FM feature pass    : {fm_pass:8.1f} s (train+val+test)")
    print(
        f"RD, cached features: {cached:8.1f} s  -> {cached / limit:.2f}x the limit (FM pass + student; target <= 1.15)"
    )
    scaled = f" (measured {online_measured:.1f} s over {n_online} epochs, scaled)" if n_online != args.epochs else ""
    print(f"RD, online FM      : {online:8.1f} s{scaled}")
    print(f"                     -> {online / cached:.1f}x slower than cached (target >= 5)")
    print(f"peak RSS           : {peak_rss_mb():8.0f} MB")


if __name__ == "__main__":
    main()
