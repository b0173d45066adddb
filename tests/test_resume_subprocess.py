"""A real run killed with SIGKILL mid-training and resumed reaches the same metrics as an uninterrupted run."""

import csv
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import balanced_subset_npz


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(tmp_path, pneumonia_arrays):
    npz = balanced_subset_npz(tmp_path / "d.npz", pneumonia_arrays, {"train": 240, "val": 60, "test": 60}, seed=2)
    base = [
        sys.executable,
        "-m",
        "reprodistill",
        "distill",
        f"data.source={npz}",
        "methods=[student]",
        "student.name=resnet18",
        "train.epochs=3",
        "train.steps=null",
        "train.batch_size=16",
        "train.augment_flip=true",
    ]
    full = subprocess.run(base + [f"--run-dir={tmp_path / 'full'}"], capture_output=True, text=True, timeout=600)
    assert full.returncode == 0, full.stderr[-1500:]

    killed_dir = tmp_path / "killed"
    proc = subprocess.Popen(base + [f"--run-dir={killed_dir}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = killed_dir / "student" / "metrics.csv"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 2:  # epoch 1 done: we are inside epoch 2
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed_dir / "results.csv").exists()

    resumed = subprocess.run(
        base + [f"--run-dir={killed_dir}", "--resume"], capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-1500:]
    assert "resumed from" in resumed.stderr

    def rows(d):
        return [
            {k: v for k, v in r.items() if "time" not in k} for r in csv.DictReader(open(d / "student" / "metrics.csv"))
        ]

    assert rows(killed_dir) == rows(tmp_path / "full")
    full_res = list(csv.DictReader(open(tmp_path / "full" / "results.csv")))[0]
    res = list(csv.DictReader(open(killed_dir / "results.csv")))[0]
    for k in ("accuracy", "balanced_accuracy", "macro_f1", "auc"):
        assert res[k] == full_res[k], k
