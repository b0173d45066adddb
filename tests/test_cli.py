"""End to end through the console script, on a small real subset with the real Merlin FM."""

import csv
import json
import subprocess
import sys

import pytest
import yaml


@pytest.mark.slow
def test_distill_end_to_end_writes_run_folder(small_npz, tmp_path):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "reprodistill", "distill", f"data.source={small_npz}", "train.epochs=2",
           "train.batch_size=16", "teacher.image_size=64", f"--run-dir={run_dir}", "data.class_names=[normal,pneumonia]"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| student |" in proc.stdout and "| linear_probe |" in proc.stdout
    assert f"run folder: {run_dir}" in proc.stdout
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["train"]["epochs"] == 2 and cfg["teacher"]["name"] == "merlin"
    rows = list(csv.DictReader(open(run_dir / "results.csv")))
    assert [r["method"] for r in rows] == ["student", "linear_probe"]
    probe = json.loads((run_dir / "linear_probe" / "test_metrics.json").read_text())
    assert probe["auc"] > 0.75, probe["auc"]  # 60 training images of frozen-FM features already separate the classes
    assert int(rows[1]["params"]) > 50e6 > int(rows[0]["params"])  # FM + head vs. resnet18
    for method in ("student", "linear_probe"):
        for name in ("metrics.csv", "best.pt", "last.pt", "test_metrics.json"):
            assert (run_dir / method / name).is_file(), (method, name)
    assert "linear_probe epoch 2/2" in (run_dir / "log.txt").read_text()
    assert json.loads((run_dir / "env.json").read_text())["seed"] == 0


def test_cli_reports_config_errors_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "reprodistill", "distill", "train.epochz=1"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert "reprodistill: error: train: unknown key(s) ['epochz']" in proc.stderr
    assert "Traceback" not in proc.stderr
