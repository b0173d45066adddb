"""The submitit launcher: the SLURM job array it would submit (mocked SLURM), real cells through its debug
executor, and a preempted cell that is requeued and resumes to the metrics of an uninterrupted run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

submitit = pytest.importorskip("submitit", reason='the slurm extra: pip install -e ".[slurm]"')


def test_the_job_array_carries_its_bound_gpus_time_limit_and_partition(tmp_path):
    from submitit.core.core import Job
    from submitit.slurm.test_slurm import mocked_slurm

    from reprodistill.bench.launchers.submitit_array import CellTask, SubmititLauncher

    launcher = SubmititLauncher(tmp_path / "submitit", "slurm", timeout_min=90, partition="gpu", gpus_per_cell=2,
                                setup=["source .venv/bin/activate"], array_parallelism=3)  # fmt: skip
    with mocked_slurm():
        ex = launcher.executor()
        with ex.batch():
            jobs = [ex.submit(CellTask(tmp_path / "cells" / f"c{i}")) for i in range(5)]
        array_id = jobs[0].job_id.split("_")[0]
        script = Job(tmp_path / "submitit" / "%j", job_id=array_id).paths.submission_file.read_text()
    lines = [line.strip() for line in script.splitlines()]
    assert "#SBATCH --array=0-4%3" in lines and "#SBATCH --time=90" in lines
    assert "#SBATCH --gpus-per-node=2" in lines and "#SBATCH --ntasks-per-node=2" in lines
    assert "#SBATCH --partition=gpu" in lines and "source .venv/bin/activate" in lines
    assert isinstance(CellTask(tmp_path), submitit.helpers.Checkpointable)


def _tiny_cells(tmp_path: Path, breast_path: Path, seeds: list[int]):
    import timm
    from conftest import balanced_subset_npz

    from reprodistill.config import load_config

    with np.load(breast_path) as z:
        arrays = {k: z[k] for k in z.files}
    npz = balanced_subset_npz(tmp_path / "small.npz", arrays, {"train": 24, "val": 12, "test": 12}, seed=0)
    torch.manual_seed(0)
    torch.save(timm.create_model("resnet10t", num_classes=0).state_dict(), tmp_path / "fm.pt")
    return load_config("default", [
        f"data.source={npz}", "methods=[student,kd]", f"bench.seeds={seeds}", "student.name=resnet10t",
        f"teacher.name={tmp_path / 'fm.pt'}", "teacher.arch=resnet10t", "teacher.image_size=32", "train.epochs=3",
        "train.steps=6", "train.batch_size=8", f"teacher.cache_dir={tmp_path / 'cache'}", "train.keep_last=true",
    ])  # fmt: skip


@pytest.mark.slow
def test_debug_executor_runs_real_cells_and_a_preempted_cell_resumes(tmp_path, breast_path, monkeypatch):
    from reprodistill.bench import run_bench
    from reprodistill.bench.launchers import LaunchOptions
    from reprodistill.bench.launchers.submitit_array import CellTask

    cfg = _tiny_cells(tmp_path, breast_path, [0])
    res = run_bench(cfg, tmp_path / "bench", plots=False,
                    launch=LaunchOptions("submitit", gpus_per_cell=0, options={"cluster": "debug"}))  # fmt: skip
    assert res.cells_run == 2 and len(res.rows) == 2
    reference = json.loads(
        (tmp_path / "bench" / "cells" / "kd" / "frac1-seed0" / "kd" / "test_metrics.json").read_text()
    )

    # the same kd cell in another bench, preempted in its second round: the requeued task resumes from last.pt
    from reprodistill.engine import budget

    calls = {"n": 0}
    original = budget.BudgetLog.step

    def preempt(self, left):
        calls["n"] += 1
        if calls["n"] == 3:  # round 2 of 3, after round 1's last.pt
            raise KeyboardInterrupt("SIGUSR2")
        return original(self, left)

    from reprodistill.bench.cell import write_cell_config
    from reprodistill.bench.grid import Cell, cell_config

    cell = Cell("kd", 1.0, 0, "kd")
    folder = tmp_path / "other" / "cells" / cell.folder
    write_cell_config(folder, cell_config(cfg, cell))
    task = CellTask(folder)
    monkeypatch.setattr(budget.BudgetLog, "step", preempt)
    with pytest.raises(KeyboardInterrupt):
        task()
    assert (folder / "kd" / "last.pt").is_file() and not (folder / "kd" / "result.json").is_file()
    monkeypatch.setattr(budget.BudgetLog, "step", original)
    requeued = task.checkpoint()  # what submitit does on SIGUSR2 / time-out
    assert isinstance(requeued.function, CellTask) and requeued.function.folder == folder
    assert requeued.function() is True
    log = (folder / "log.txt").read_text()
    assert "resumed from" in log
    resumed = json.loads((folder / "kd" / "test_metrics.json").read_text())
    assert resumed["auc"] == reference["auc"] and resumed["confusion_matrix"] == reference["confusion_matrix"]


def test_a_submitted_record_holds_its_cell_while_the_job_is_queued(tmp_path, monkeypatch):
    import os
    import time

    from reprodistill.bench import submitted
    from reprodistill.bench.launchers import cell_holder

    cell = tmp_path / "cell"
    assert cell_holder(cell) is None  # no record, no lock
    submitted.write_record(cell, "slurm", "123_4", tmp_path / "logs")
    states = {"s": "PENDING"}
    monkeypatch.setattr(submitted, "slurm_state", lambda job, logs: states["s"])
    assert cell_holder(cell) == "SLURM job 123_4 (PENDING)"
    for state, held in [("RUNNING", True), ("REQUEUED", True), ("COMPLETED", False), ("FAILED", False),
                        ("CANCELLED by 1000", False), ("TIMEOUT", False), ("UNKNOWN", True)]:  # fmt: skip
        states["s"] = state
        assert (submitted.queued_holder(cell) is not None) is held, state
    record = json.loads((cell / submitted.RECORD).read_text())
    record["time"] = time.time() - submitted.UNKNOWN_GRACE_S - 1  # sacct still does not know it: given up
    (cell / submitted.RECORD).write_text(json.dumps(record))
    assert submitted.queued_holder(cell) is None

    submitted.write_record(cell, "local", str(os.getpid()), tmp_path / "logs")  # a live process
    assert submitted.queued_holder(cell) == f"local job {os.getpid()}"
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    submitted.write_record(cell, "local", dead.stdout.strip(), tmp_path / "logs")
    assert submitted.queued_holder(cell) is None


@pytest.mark.slow
def test_no_wait_submits_and_a_later_bench_collects_without_submitting_again(tmp_path, breast_path):
    from reprodistill.bench import run_bench
    from reprodistill.bench.launchers import LaunchOptions
    from reprodistill.errors import ReprodistillError

    cfg = _tiny_cells(tmp_path, breast_path, [0])
    bench = tmp_path / "bench"
    with pytest.raises(ReprodistillError, match="--no-wait needs --launcher submitit"):
        run_bench(cfg, bench, plots=False, launch=LaunchOptions("processes", no_wait=True))
    launch = LaunchOptions("submitit", gpus_per_cell=0, no_wait=True, options={"cluster": "local"})
    first = run_bench(cfg, bench, plots=False, launch=launch)
    assert first.cells_pending == 2 and first.rows == [] and not (bench / "results.csv").exists()
    jobs = {json.loads(p.read_text())["job_id"] for p in bench.glob("cells/*/*/submitted.json")}
    assert len(jobs) == 2
    again = run_bench(cfg, bench, plots=False, launch=launch)  # while they run: nothing is submitted twice
    assert again.cells_pending + again.cells_kept == 2
    collect = run_bench(
        cfg, bench, plots=False, launch=LaunchOptions("submitit", gpus_per_cell=0, options={"cluster": "local"})
    )
    assert len(collect.rows) == 2 and (bench / "results.csv").is_file()
    assert {p.name for p in (bench / "submitit").glob("[0-9]*")} == jobs  # the two first jobs only
    for cell in bench.glob("cells/*/*"):
        assert (cell / "log.txt").read_text().count("resumed from") == 0
