"""Bench launchers: the contract every launcher that runs here keeps (fake cells recording their GPU ids and times),
heartbeat locks, and two real benches on one folder sharing its cells."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from reprodistill.bench.launchers import CellJob, ProcessLauncher, run_cells
from reprodistill.util.heartbeat_lock import HeartbeatLock, stale_reason

FAKE_CELL = """
import json, os, sys, time
from pathlib import Path
from reprodistill.util.heartbeat_lock import HeartbeatLock
folder = Path(sys.argv[1])
lock = HeartbeatLock(folder)
if not lock.acquire():
    sys.exit(0)
start = time.time()
time.sleep(0.8)
record = {"gpus": os.environ["CUDA_VISIBLE_DEVICES"], "threads": os.environ["OMP_NUM_THREADS"], "start": start,
          "end": time.time()}
(folder / "record.json").write_text(json.dumps(record))
(folder / "result.json").write_text("{}")
lock.release()
"""


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_launcher_contract_with_fake_cells(tmp_path):
    """6 cells, 2 workers, one already finished, one with a stale lock: 5 run, never more than 2 at once,
    concurrent cells get different GPU ids, the stale lock is taken over, every cell ends finished."""
    script = tmp_path / "fake_cell.py"
    script.write_text(FAKE_CELL)
    folders = [tmp_path / "cells" / f"c{i}" for i in range(6)]
    for f in folders:
        f.mkdir(parents=True)
    (folders[0] / "result.json").write_text("{}")  # finished before
    stale = {"host": __import__("socket").gethostname(), "pid": _dead_pid(), "heartbeat": time.time() - 10}
    (folders[1] / ".cell-lock.json").write_text(json.dumps(stale))
    assert stale_reason(stale, 300.0) is not None and HeartbeatLock(folders[1]).holder() is None
    jobs = [CellJob(f, [sys.executable, str(script), str(f)], (f / "result.json").is_file) for f in folders]
    launcher = ProcessLauncher(workers=2, gpus=["0", "1", "2"], threads=1)
    assert run_cells(jobs, launcher) == []
    records = {f.name: json.loads((f / "record.json").read_text()) for f in folders if (f / "record.json").is_file()}
    assert sorted(records) == ["c1", "c2", "c3", "c4", "c5"]  # the finished cell did not run again
    assert all((f / "result.json").is_file() for f in folders) and not (folders[1] / ".cell-lock.json").exists()
    spans = sorted((r["start"], r["end"], r["gpus"]) for r in records.values())
    for t in [s for s, _, _ in spans]:
        live = [g for s, e, g in spans if s <= t < e]
        assert len(live) <= 2 and len(set(live)) == len(live), (t, live)  # at most 2, never sharing a GPU
    assert max(len([1 for s, e, _ in spans if s <= t < e]) for t, _, _ in spans) == 2  # and the pool was used
    assert {r["threads"] for r in records.values()} == {"1"}


def test_a_live_lock_is_respected_and_a_stale_one_taken_over(tmp_path):
    lock = HeartbeatLock(tmp_path, beat_s=0.1)
    assert lock.acquire()
    other = HeartbeatLock(tmp_path)
    assert not other.acquire() and "pid" in (other.holder() or "")
    time.sleep(0.3)  # the heartbeat is refreshed
    assert json.loads(lock.path.read_text())["heartbeat"] > time.time() - 0.3
    lock._stop.set()  # the holder hangs: its heartbeat stops
    time.sleep(0.2)
    impatient = HeartbeatLock(tmp_path, stale_after_s=0.1)
    assert impatient.acquire()  # stale by heartbeat age: taken over
    lock.release()  # the old holder's release must not remove the new holder's lock
    assert impatient.path.exists()
    impatient.release()
    assert not impatient.path.exists()


@pytest.mark.slow
def test_two_benches_on_one_folder_share_the_cells_and_the_fm_pass(tmp_path):
    """Two `reprodistill bench --launcher processes` started at once on the same folder: every cell trains exactly
    once, both reports are complete, and each FM feature entry was computed once."""
    import timm
    import torch
    from conftest import BREAST, balanced_subset_npz

    if not BREAST.is_file():
        pytest.skip(f"needs the shared data file {BREAST}")
    with np.load(BREAST) as z:
        data = {k: z[k] for k in z.files}
    npz = balanced_subset_npz(tmp_path / "small.npz", data, {"train": 24, "val": 12, "test": 12}, seed=0)
    torch.manual_seed(0)
    torch.save(timm.create_model("resnet10t", num_classes=0).state_dict(), tmp_path / "fm.pt")
    args = [sys.executable, "-m", "reprodistill", "bench", f"data.source={npz}", "methods=[student,kd]",
            "bench.seeds=[0,1]", "student.name=resnet10t", f"teacher.name={tmp_path / 'fm.pt'}",
            "teacher.arch=resnet10t", "teacher.image_size=32", "train.epochs=1", "train.steps=2",
            "train.batch_size=8", f"teacher.cache_dir={tmp_path / 'cache'}", "--dir", str(tmp_path / "bench"),
            "--launcher", "processes", "--workers", "1"]  # fmt: skip
    procs = [subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]  # fmt: skip
    outs = [p.communicate(timeout=900) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    cells = sorted((tmp_path / "bench" / "cells").glob("*/*"))
    assert len(cells) == 4
    for cell in cells:  # trained once: one training start in its log, whichever bench launched it
        log = (cell / "log.txt").read_text()
        assert log.count(": training (") == 1, cell
    rows = (tmp_path / "bench" / "results.csv").read_text().strip().splitlines()
    assert len(rows) == 5  # header + every cell
    computed = [line for c in cells for line in (c / "log.txt").read_text().splitlines() if "computed in" in line]
    assert len(computed) == 3, computed  # train, val and test features once across both benches


@pytest.mark.ray
def test_ray_launcher_contract_with_fake_gpus(tmp_path):
    """The same contract under Ray core with 2 fake GPUs: 4 cells of 1 GPU each, never more than 2 at once, never
    two on one GPU id."""
    ray = pytest.importorskip("ray", reason='the ray extra: pip install -e ".[ray]"')
    from reprodistill.bench.launchers.ray_tasks import RayLauncher

    script = tmp_path / "fake_cell.py"
    script.write_text(FAKE_CELL)
    folders = [tmp_path / "cells" / f"c{i}" for i in range(4)]
    for f in folders:
        f.mkdir(parents=True)
    jobs = [CellJob(f, [sys.executable, str(script), str(f)], (f / "result.json").is_file) for f in folders]
    try:
        assert run_cells(jobs, RayLauncher(num_gpus=1, init={"num_cpus": 2, "num_gpus": 2})) == []
    finally:
        ray.shutdown()
    spans = sorted((r["start"], r["end"], r["gpus"]) for r in
                   (json.loads((f / "record.json").read_text()) for f in folders))  # fmt: skip
    assert {g for _, _, g in spans} <= {"0", "1"}
    for t in [s for s, _, _ in spans]:
        live = [g for s, e, g in spans if s <= t < e]
        assert len(live) <= 2 and len(set(live)) == len(live), (t, live)


def test_a_cell_found_held_by_another_process_is_not_counted_as_trained_here(tmp_path):
    """Two benches on one folder: a cell process that finds its cell held exits LEFT_TO_ANOTHER (3) and trains
    nothing, and the bench that launched it counts only exit-0 launches as trained (both benches used to print
    '6 cells trained', 0 collected)."""
    from reprodistill.bench.cell import LEFT_TO_ANOTHER, write_cell_config
    from reprodistill.cli import main
    from reprodistill.config import RunConfig

    held = tmp_path / "held"
    write_cell_config(held, RunConfig())
    other = HeartbeatLock(held)
    assert other.acquire()  # another live process holds the cell
    try:
        assert main(["cell", str(held)]) == LEFT_TO_ANOTHER
    finally:
        other.release()
    mine = tmp_path / "mine"
    mine.mkdir()

    class Launcher:  # the cell processes: `mine` trains, `held` was held (its holder finished it meanwhile)
        def launch(self, jobs):
            for j in jobs:
                (j.folder / "result.json").write_text("{}")
            return {j.folder: 0 if j.folder == mine else LEFT_TO_ANOTHER for j in jobs}

    jobs = [CellJob(f, [], (f / "result.json").is_file) for f in (mine, held)]
    trained: set = set()
    assert run_cells(jobs, Launcher(), trained=trained) == [] and trained == {mine}


def test_waiting_for_a_held_cell_is_said_once_a_minute_not_at_every_poll(tmp_path, monkeypatch, caplog):
    """A bench waiting for a cell another process trains polls every few seconds for as long as that cell takes
    (minutes); it says so when the held set changes or once a minute, not at every poll (it printed a line every
    5 s). With the minute shrunk to 0 it says it at every poll."""
    from reprodistill.bench.launchers import base

    folder = tmp_path / "held"
    folder.mkdir()
    lock = HeartbeatLock(folder)
    assert lock.acquire()

    class NeverLaunched:
        def launch(self, jobs):
            raise AssertionError("a held cell must not be launched here")

    def waits(every_s: float) -> int:
        polls = iter(range(6))  # the holder finishes the cell at the 6th poll
        monkeypatch.setattr(base, "WAITING_LOG_EVERY_S", every_s)
        caplog.clear()
        with caplog.at_level("INFO", logger="reprodistill"):
            job = CellJob(folder, [], lambda: next(polls, 5) >= 5)
            assert run_cells([job], NeverLaunched(), wait_s=0.001) == []
        return sum("waiting for 1 cells held elsewhere" in r.getMessage() for r in caplog.records)

    try:
        assert waits(60.0) == 1
        assert waits(0.0) == 5
    finally:
        lock.release()


def test_a_new_launcher_is_one_class_and_appears_in_the_cli(tmp_path):
    """A toy launcher registered here, with one option of its own, is among `reprodistill bench --launcher`'s
    choices, its flag parses into its options, the bench builds it from them and it runs cells; the registry's
    checks apply to it (no fraction of a GPU, no --no-wait) without any other file knowing it."""
    from dataclasses import dataclass, field

    from reprodistill.bench.launchers import LAUNCHERS, Launcher, build_launcher, launch_options, register_launcher
    from reprodistill.cli import _parser
    from reprodistill.errors import ReprodistillError

    @dataclass
    class ToyOptions:
        toy_label: str = field(default="plain", metadata={"help": "toy: written into each cell"})

    @register_launcher("toy")
    @dataclass
    class ToyLauncher(Launcher):
        label: str = "plain"
        help = "runs each cell by writing its result"
        Options = ToyOptions

        @classmethod
        def create(cls, options, gpus_per_cell, bench_dir):
            return cls(options.toy_label)

        def launch(self, jobs):
            for j in jobs:
                (j.folder / "result.json").write_text(json.dumps({"label": self.label}))
            return {j.folder: 0 for j in jobs}

    try:
        parser = _parser()
        args = parser.parse_args(["bench", "--launcher", "toy", "--toy-label", "shiny"])
        assert "toy: runs each cell" in parser._subparsers._group_actions[0].choices["bench"].format_help()
        launcher = build_launcher(launch_options(args), tmp_path)
        assert isinstance(launcher, ToyLauncher) and launcher.label == "shiny"
        folders = [tmp_path / f"c{i}" for i in range(2)]
        for f in folders:
            f.mkdir()
        jobs = [CellJob(f, [], (f / "result.json").is_file) for f in folders]
        trained: set = set()
        assert run_cells(jobs, launcher, trained=trained) == [] and trained == set(folders)
        assert json.loads((folders[0] / "result.json").read_text()) == {"label": "shiny"}
        with pytest.raises(ReprodistillError, match="a fraction of a GPU needs --launcher"):
            build_launcher(launch_options(parser.parse_args(["bench", "--launcher", "toy", "--gpus-per-cell", "0.5"])),
                           tmp_path)  # fmt: skip
        with pytest.raises(ReprodistillError, match="--no-wait needs --launcher submitit"):
            build_launcher(launch_options(parser.parse_args(["bench", "--launcher", "toy", "--no-wait"])), tmp_path)
        with pytest.raises(ValueError, match="already belong to another launcher"):
            register_launcher("toy-again")(type("Again", (ToyLauncher,), {}))
    finally:
        LAUNCHERS.unregister("toy")
    assert "toy" not in LAUNCHERS
