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
    base = [
        sys.executable,
        "-m",
        "reprodistill",
        "distill",
        f"data.source={small_npz}",
        "train.epochs=2",
        "train.steps=null",
        "train.batch_size=16",
        f"teacher.cache_dir={tmp_path / 'cache'}",
    ]
    cmd = base + ["teacher.image_size=64", f"--run-dir={run_dir}", "methods=[student,linear_probe,rd]"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| student |" in proc.stdout and "| linear_probe |" in proc.stdout and "| rd |" in proc.stdout
    assert "cache hit" not in proc.stderr and len(list((tmp_path / "cache").glob("*.npy"))) == 3
    assert f"run folder: {run_dir}" in proc.stdout
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["train"]["epochs"] == 2 and cfg["teacher"]["name"] == "merlin"
    rows = list(csv.DictReader(open(run_dir / "results.csv")))
    assert [r["method"] for r in rows] == ["student", "linear_probe", "rd"]
    assert int(rows[2]["params"]) == int(rows[0]["params"])  # RD deploys only the student (with g as its head)
    assert "train_cka" in (run_dir / "rd" / "metrics.csv").read_text().splitlines()[0]
    rd = json.loads((run_dir / "rd" / "test_metrics.json").read_text())
    assert 0.0 <= rd["extra"]["reprogrammed_fm"]["auc"] <= 1.0  # the FM branch is reported, not deployed
    probe = json.loads((run_dir / "linear_probe" / "test_metrics.json").read_text())
    assert probe["auc"] > 0.75, probe["auc"]  # 60 training images of frozen-FM features already separate the classes
    assert int(rows[1]["params"]) > 50e6 > int(rows[0]["params"])  # FM + head vs. resnet18
    for name in ("metrics.csv", "best.pt", "test_metrics.json", "result.json"):
        assert (run_dir / "student" / name).is_file(), name
    assert not (run_dir / "student" / "last.pt").exists()  # finished: the 100+ MB resume state is deleted
    assert (run_dir / "linear_probe" / "best.pt").is_file()  # solved in prepare(): no epochs, no metrics.csv
    assert "linear probe: L2" in (run_dir / "log.txt").read_text()
    assert json.loads((run_dir / "env.json").read_text())["seed"] == 0

    # a second run reuses the cached teacher features; a different teacher input size does not
    again = subprocess.run(
        base + ["teacher.image_size=64", f"--run-dir={tmp_path / 'run2'}", "methods=[linear_probe]"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 0 and again.stderr.count("cache hit") == 3, again.stderr[-2000:]
    assert json.loads((tmp_path / "run2" / "linear_probe" / "test_metrics.json").read_text())["auc"] == probe["auc"]
    other = subprocess.run(
        base + ["teacher.image_size=48", f"--run-dir={tmp_path / 'run3'}", "methods=[linear_probe]"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert other.returncode == 0 and "cache hit" not in other.stderr


def test_cli_reports_config_errors_without_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "reprodistill", "distill", "train.epochz=1"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert "reprodistill: error: train: unknown key(s) ['epochz']" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_rd_and_drd_with_efficientnet_teacher_and_mobilenet_student(small_npz, tmp_path):
    """The other packaged FM (ImageNet EfficientNet-Lite0, RGB 224 px) and a MobileNetV3 student, end to end."""
    from reprodistill.config import load_config
    from reprodistill.engine.run import run

    cfg = load_config(
        "default",
        [
            f"data.source={small_npz}",
            "methods=[rd,drd]",
            "teacher.name=efficientnet_lite0",
            "teacher.image_size=96",
            "student.name=mobilenetv3_small_100",
            "train.epochs=1",
            "train.steps=null",
            "train.batch_size=16",
            "teacher.cache_dir=null",
        ],
    )
    result = run(cfg, run_dir=tmp_path / "run")
    assert [r.method for r in result.results] == ["rd", "drd"]
    assert all(0.0 <= r.test["auc"] <= 1.0 and r.params < 2e6 for r in result.results)  # the student is deployed


def test_help_describes_each_command_with_examples_and_version():
    top = subprocess.run([sys.executable, "-m", "reprodistill", "--help"], capture_output=True, text=True, timeout=60)
    assert top.returncode == 0 and "``" not in top.stdout and "examples:" in top.stdout
    version = subprocess.run([sys.executable, "-m", "reprodistill", "--version"], capture_output=True, text=True)
    assert version.stdout.startswith("reprodistill ")
    for command in ("distill", "bench", "config", "export", "predict"):
        out = subprocess.run(
            [sys.executable, "-m", "reprodistill", command, "--help"], capture_output=True, text=True, timeout=60
        ).stdout
        assert "examples:" in out and f"reprodistill {command}" in out.split("examples:")[1], command
        assert max(len(line) for line in out.splitlines()) <= 120, command
    assert (
        "a finished run folder"
        in subprocess.run(
            [sys.executable, "-m", "reprodistill", "export", "--help"], capture_output=True, text=True
        ).stdout
    )


def test_list_names_every_method_and_the_caveats_of_the_unproven_ones(capsys):
    from reprodistill.cli import main
    from reprodistill.methods import METHODS

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in METHODS.names()) and "fixmatch" in out and "mean_teacher" in out
    caveats = [name for name in METHODS.names() if METHODS.get(name).caveat]
    assert "drd" in caveats and "rd" not in caveats
    for name in caveats:  # each with its measured reason on its own line
        assert f"  {name}: {METHODS.get(name).caveat}" in out


def test_list_into_a_closed_pipe_is_not_an_error():
    """`reprodistill list | head -1` printed a BrokenPipeError traceback (the reader gone before the last line)."""
    import os

    read, write = os.pipe()
    os.close(read)  # the reader has gone before the first line
    proc = subprocess.run([sys.executable, "-m", "reprodistill", "list"], stdout=write, stderr=subprocess.PIPE,
                          text=True)  # fmt: skip
    os.close(write)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
