"""Kill a real training run with SIGKILL in the middle of an epoch, resume it, and compare with an uninterrupted run.

    python benchmarks/kill_and_resume.py                 # resnet18, 25% of PneumoniaMNIST, 4 epochs
    python benchmarks/kill_and_resume.py --export        # also export the resumed student and check ONNX parity

Prints per-epoch validation metrics and the test metrics of both runs and their largest difference (0 expected:
resume restores model, optimiser, schedule, RNG states and the epoch's data order).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fraction", type=float, default=0.25)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--kill-after-epoch", type=int, default=2, help="kill once this many epochs are logged")
    p.add_argument("--export", action="store_true")
    args = p.parse_args()
    base = [sys.executable, "-m", "reprodistill", "distill", "methods=[student]", f"data.fraction={args.fraction}",
            f"train.epochs={args.epochs}", "train.steps=null", "train.augment_flip=true"]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        subprocess.run([*base, f"--run-dir={root / 'full'}"], check=True, capture_output=True)
        killed = root / "killed"
        proc = subprocess.Popen([*base, f"--run-dir={killed}"], stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        metrics = killed / "student" / "metrics.csv"
        while proc.poll() is None:
            if metrics.is_file() and len(metrics.read_text().splitlines()) > args.kill_after_epoch:
                time.sleep(0.5)  # well inside the next epoch
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
        proc.wait()
        print(
            f"killed run: exit {proc.returncode} (SIGKILL = {-signal.SIGKILL}) inside epoch {args.kill_after_epoch + 1}"
        )
        resumed = subprocess.run([*base, f"--run-dir={killed}"], capture_output=True, text=True, check=True)
        print("resume log:", next(line for line in resumed.stderr.splitlines() if "resumed from" in line).strip())

        def hist(run: Path) -> list[dict[str, str]]:
            return list(csv.DictReader(open(run / "student" / "metrics.csv")))

        keys = ("train_loss", "val_accuracy", "val_auc")
        print(f"{'epoch':>5} | " + " | ".join(f"{k} full / resumed" for k in keys))
        worst = 0.0
        for a, b in zip(hist(root / "full"), hist(killed), strict=True):
            worst = max(worst, *(abs(float(a[k]) - float(b[k])) for k in keys))
            print(f"{a['epoch']:>5} | " + " | ".join(f"{float(a[k]):.6f} / {float(b[k]):.6f}" for k in keys))
        ta = json.loads((root / "full" / "student" / "test_metrics.json").read_text())
        tb = json.loads((killed / "student" / "test_metrics.json").read_text())
        for k in ("accuracy", "balanced_accuracy", "macro_f1", "auc"):
            worst = max(worst, abs(ta[k] - tb[k]))
            print(f"test {k}: {ta[k]:.6f} / {tb[k]:.6f}")
        print(f"largest difference, uninterrupted vs killed+resumed: {worst:.2e}")
        if args.export:
            out = subprocess.run([sys.executable, "-m", "reprodistill", "export", str(killed)], capture_output=True,
                                 text=True, check=True)  # fmt: skip
            print(out.stdout.strip())


if __name__ == "__main__":
    main()
