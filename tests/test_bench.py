"""`reprodistill bench`: the grid, its files and plots, and a killed bench that reruns only missing cells."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from reprodistill.bench import bench_cells
from reprodistill.bench.grid import cell_config
from reprodistill.bench.report import results_markdown
from reprodistill.bench.rows import BenchRow
from reprodistill.bench.stats import aggregate
from reprodistill.config import load_config


def test_cells_cover_the_grid_and_cell_configs_do_not_depend_on_it():
    cfg = load_config("bench", ["methods=[student,kd]", "bench.seeds=[0,1]", "bench.fractions=[0.1,1.0]"])
    cells = bench_cells(cfg)
    assert len(cells) == 8 and len(set(cells)) == 8
    assert cells[0].fraction == 1.0  # largest fraction first
    c = cell_config(cfg, cells[-1])
    assert c.methods == [cells[-1].method] and c.data.fraction == 0.1 and c.train.seed == 1
    grown = load_config("bench", ["methods=[student,kd,rd]", "bench.seeds=[0,1,2]", "bench.fractions=[0.1,1.0]"])
    assert cell_config(grown, cells[-1]) == c  # growing the grid keeps finished cells valid


def test_bad_grid_values_are_refused():
    with pytest.raises(Exception, match="bench.fractions must lie in"):
        load_config("bench", ["bench.fractions=[0.0]"])
    with pytest.raises(Exception, match="repeat"):
        load_config("bench", ["bench.seeds=[1,1]"])


def test_aggregate_mean_and_sample_std():
    costs = {"transfer_s": 10, "train_time_s": 10, "latency_ms": 1, "params": 5, "gflops": 1}
    rows = [
        BenchRow("m", 1.0, s, test={"accuracy": a, "balanced_accuracy": 0.5, "macro_f1": 0.5, "auc": 0.5}, costs=costs)
        for s, a in enumerate((0.7, 0.8, 0.9))
    ]
    agg = aggregate(rows)[("m", 1.0)]
    assert (
        agg.n == 3 and agg.stats["accuracy"][0] == pytest.approx(0.8) and agg.stats["accuracy"][1] == pytest.approx(0.1)
    )
    assert "0.8000 ± 0.1000" in results_markdown(rows, ["m"])


@pytest.mark.slow
def test_bench_end_to_end_then_kill_and_rerun_only_missing_cells(tmp_path, small_npz):
    import timm

    torch.manual_seed(0)
    torch.save(timm.create_model("resnet10t", num_classes=0).state_dict(), tmp_path / "fm.pt")
    bench_dir = tmp_path / "bench"
    cmd = [
        sys.executable, "-m", "reprodistill", "bench", f"--dir={bench_dir}",
        f"data.source={small_npz}", f"teacher.name={tmp_path / 'fm.pt'}", "teacher.arch=resnet10t",
        "teacher.image_size=64", f"teacher.cache_dir={tmp_path / 'cache'}", "student.name=resnet10t",
        "methods=[student,kd,fitnet]", "bench.seeds=[0,1]", "bench.fractions=[1.0,0.5]",
        "train.epochs=2", "train.steps=null", "train.batch_size=16",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if len(list(bench_dir.glob("cells/*/*/*/result.json"))) >= 2:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the bench finished before it could be killed"
    finished = {p: p.stat().st_mtime_ns for p in bench_dir.glob("cells/*/*/*/result.json")}
    assert 2 <= len(finished) < 12

    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{12 - len(finished)} cells trained, {len(finished)} kept" in rerun.stdout
    for p, mtime in finished.items():
        assert p.stat().st_mtime_ns == mtime, f"{p} was redone"
    rows = list(csv.DictReader(open(bench_dir / "results.csv")))
    assert len(rows) == 12
    assert {(r["method"], float(r["fraction"]), int(r["seed"])) for r in rows} == {
        (m, f, s) for m in ("student", "kd", "fitnet") for f in (1.0, 0.5) for s in (0, 1)
    }
    assert all(0.0 <= float(r["accuracy"]) <= 1.0 for r in rows)
    # methods with a teacher pay for its feature pass; the student alone does not
    assert all((float(r["fm_feature_s"]) > 0) == (r["method"] != "student") for r in rows)
    report = (bench_dir / "report.md").read_text()
    assert "### Training fraction 0.5" in report and "| fitnet | 2 |" in report and "probed_fm" in report
    # a teacher branch is scored on validation too (the split that chooses), beside its test scores
    on_val = json.loads(next(bench_dir.glob("cells/kd/*/kd/result.json")).read_text())["val"]["extra"]["probed_fm"]
    assert 0.0 <= on_val["auc"] <= 1.0 and 0.0 <= on_val["balanced_accuracy"] <= 1.0
    branch = next(line for line in report.splitlines() if line.startswith("| kd | probed_fm | 0.5 | 2 |"))
    assert float(branch.split("|")[5].split("±")[0]) > 0.0  # the val AUC column, filled
    # the verdict: one line per fraction, in the report and printed (no RD-family row here: no difference to show)
    assert report.count("- **Fraction ") == 2 and "Verdict (chosen on validation" in rerun.stdout
    assert "2 seeds: too few for an interval" in report  # 2 seeds claim nothing
    for png in ("accuracy_vs_cost", "accuracy_vs_fraction", "student_vs_fm_size_latency", "training_curves",
                "confusion_best_student"):  # fmt: skip
        data = (bench_dir / "plots" / f"{png}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0 and "0 cells trained, 12 kept" in again.stdout

    # --retest tests every stored checkpoint again (same code here, so the same figures) and trains nothing
    retest = subprocess.run([*cmd, "--retest"], capture_output=True, text=True, timeout=300, env=env)
    assert retest.returncode == 0 and "0 cells trained, 12 re-tested" in retest.stdout, retest.stderr[-2000:]
    again_rows = list(csv.DictReader(open(bench_dir / "results.csv")))
    for before, after in zip(rows, again_rows):
        assert {k: before[k] for k in ("method", "seed", "auc", "accuracy", "train_time_s")} == {
            k: after[k] for k in ("method", "seed", "auc", "accuracy", "train_time_s")
        }
    assert len(list(bench_dir.glob("cells/*/*/retest.json"))) == 12


def test_bench_variants_resolve_to_their_method_with_merged_options(tmp_path):
    from reprodistill.bench.grid import bench_cells, cell_config
    from reprodistill.config import ConfigError, load_config
    from reprodistill.methods import check_config

    spec = tmp_path / "ablate.yaml"
    spec.write_text(
        "methods: [tdmr, tdmr-no-prompt]\n"
        "method_options: {tdmr: {stage1_epochs: 2, t_start: 3.0}}\n"
        "bench: {fractions: [0.1], variants: {tdmr-no-prompt: {method: tdmr, options: {prompt: none}}}}\n"
    )
    cfg = load_config(str(spec))
    cells = bench_cells(cfg)
    assert [(c.method, c.base) for c in cells] == [("tdmr", "tdmr"), ("tdmr-no-prompt", "tdmr")]
    c = cell_config(cfg, cells[1])
    assert c.methods == ["tdmr"] and not c.bench.variants
    assert c.method_options == {"tdmr": {"stage1_epochs": 2, "t_start": 3.0, "prompt": "none"}}
    assert cells[1].result_path(tmp_path) == tmp_path / "cells/tdmr-no-prompt/frac0.1-seed0/tdmr/result.json"
    # a variant's options are validated up front, and a variant may not shadow a registered method
    with pytest.raises(ConfigError, match="prompt"):
        check_config(load_config(str(spec), ["bench.variants.tdmr-no-prompt.options.prompt=nothing"]))
    with pytest.raises(ConfigError, match="shadow"):
        check_config(load_config(str(spec), ["bench.variants.kd={method: tdmr}", "methods=[kd]"]))


def test_bench_variants_may_override_data_and_train_keys():
    from reprodistill.bench.grid import bench_cells, cell_config
    from reprodistill.config import ConfigError, load_config

    variant = "bench.variants={kd-unl: {method: kd, data: {unlabelled: rest}, train: {lr: 0.01}}}"
    cfg = load_config("breast-bench", ["methods=[kd,kd-unl]", variant, "bench.fractions=[0.1]", "bench.seeds=[0]"])
    plain, unl = (cell_config(cfg, c) for c in bench_cells(cfg))
    assert (plain.data.unlabelled, plain.train.lr) == ("none", 0.001)
    assert (unl.methods, unl.data.unlabelled, unl.train.lr) == (["kd"], "rest", 0.01)
    assert unl.data.source == plain.data.source and unl.data.fraction == 0.1  # only the named keys change
    with pytest.raises(ConfigError, match="bench.variants.kd-unl: data.unlabelled=x: no such folder"):
        load_config(
            "breast-bench", ["methods=[kd-unl]", "bench.variants={kd-unl: {method: kd, data: {unlabelled: x}}}"]
        )
    with pytest.raises(ConfigError, match="would change the FM"):  # the FM is shared: only its cached views vary
        load_config("breast-bench", ["methods=[kd-t]", "bench.variants={kd-t: {method: kd, teacher: {name: x}}}"])
    with pytest.raises(ConfigError, match="must look like"):
        load_config("breast-bench", ["methods=[kd-t]", "bench.variants={kd-t: {method: kd, model: {name: x}}}"])


def test_budget_axis_makes_one_row_per_method_and_budget():
    """bench.steps=[300, 1500]: each method, variants included, becomes <name>@300 and <name>@1500 with that
    train.steps and everything else of its variant; a variant that fixes its own steps keeps them; expanding twice
    changes nothing."""
    from reprodistill.bench.grid import bench_cells, cell_config
    from reprodistill.config import ConfigError, expand_budgets, load_config

    cfg = load_config("breast-bench", ["methods=[student,fixmatch-unl,visual_prompt-40]", "bench.fractions=[0.1]",
                                       "bench.seeds=[0]", "bench.steps=[1500,300]"])  # fmt: skip
    x = expand_budgets(cfg)
    assert x.methods == ["student@300", "student@1500", "fixmatch-unl@300", "fixmatch-unl@1500", "visual_prompt-40"]
    assert expand_budgets(x).methods == x.methods and cfg.bench.steps == [1500, 300]  # the input is not changed
    cells = {c.method: cell_config(x, c) for c in bench_cells(x)}
    assert cells["student@1500"].train.steps == 1500 and cells["student@300"].methods == ["student"]
    fm = cells["fixmatch-unl@1500"]
    assert (fm.methods, fm.data.unlabelled, fm.train.steps, fm.train.epochs) == (["fixmatch"], "rest", 1500, 15)
    assert cells["visual_prompt-40"].train.steps == 40
    assert bench_cells(x)[1].folder == "student@1500/frac0.1-seed0"
    with pytest.raises(ConfigError, match="positive"):
        expand_budgets(load_config("breast-bench", ["bench.steps=[0]"]))


def test_a_row_naming_another_rows_cell_gets_that_rows_cell_of_its_seed_and_runs_after_it(tmp_path):
    """`co_teacher: cell:fixmatch-unl@1500` becomes the same fraction and seed's cell folder of that row, and the
    grid trains that row's cell first whatever the order of `methods`."""
    from reprodistill.config import ConfigError, expand_budgets

    cfg = expand_budgets(
        load_config(
            "breast-bench",
            [
                "methods=[rd-unl-mix-co,fixmatch-unl]",
                "bench.seeds=[3]",
                "bench.fractions=[0.1]",
                "bench.steps=[300,1500]",
            ],
        )  # fmt: skip
    )
    cells = bench_cells(cfg)
    order = [c.method for c in cells]
    assert order.index("fixmatch-unl@1500") < order.index("rd-unl-mix-co@300")
    co = next(c for c in cells if c.method == "rd-unl-mix-co@300")
    assert cell_config(cfg, co).method_options["rd"]["co_teacher"] == "cell:fixmatch-unl@1500"  # its run resolves it
    ens = expand_budgets(load_config("breast-bench", ["methods=[rd-unl-mix-ens,fixmatch-unl,rd-unl-mix]",
                                                       "bench.seeds=[3]", "bench.fractions=[0.1]",
                                                       "bench.steps=[300,1500]"]))  # fmt: skip
    order = [c.method for c in bench_cells(ens)]
    assert order.index("rd-unl-mix@300") < order.index("rd-unl-mix-ens@300") > order.index("fixmatch-unl@1500")
    lone = expand_budgets(load_config("breast-bench", ["methods=[rd-unl-mix-co]", "bench.steps=[300]"]))
    with pytest.raises(ConfigError, match="names cell:fixmatch-unl@1500, which is not a row of this bench"):
        bench_cells(lone)


def test_parallel_launchers_start_a_cell_only_after_the_cells_it_reads(tmp_path, monkeypatch):
    """With a pool of processes (or a scheduler) the ensemble row's cells wait for a wave of their co-teachers'
    cells: every launch holds no cell whose named cells are unfinished, and `--no-wait` submits only ready cells."""
    from reprodistill.bench import grid
    from reprodistill.bench.launchers import LaunchOptions
    from reprodistill.config import expand_budgets

    cfg = expand_budgets(load_config("breast-bench", ["methods=[rd-unl-mix-ens,fixmatch-unl,rd-unl-mix]",
                                                      "bench.seeds=[0]", "bench.fractions=[0.1]",
                                                      "bench.steps=[300,1500]"]))  # fmt: skip
    cells = bench_cells(cfg)
    waves = grid.cell_waves(cfg, cells)
    first = ["fixmatch-unl@1500", "fixmatch-unl@300", "rd-unl-mix@1500", "rd-unl-mix@300"]
    assert [sorted({c.method for c in w}) for w in waves] == [first, ["rd-unl-mix-ens@1500", "rd-unl-mix-ens@300"]]
    by_folder = {tmp_path / "cells" / c.folder: c for c in cells}
    launches: list[list[str]] = []

    class Pool:  # records each launch and finishes its cells, after checking that the cells they read finished
        torchrun_cells = False

        def launch(self, jobs):
            for j in jobs:
                cell = by_folder[j.folder]
                assert all(n.result_path(tmp_path).is_file() for n in grid._named_cells(cfg, cell))
                cell.result_path(tmp_path).parent.mkdir(parents=True, exist_ok=True)
                cell.result_path(tmp_path).write_text("{}")
            launches.append(sorted({j.folder.parent.name for j in jobs}))
            return {j.folder: 0 for j in jobs}

        def submit(self, jobs):
            launches.append(sorted({j.folder.parent.name for j in jobs}))
            return []

    monkeypatch.setattr(grid, "build_launcher", lambda launch, bench_dir: Pool())
    res = grid.BenchResult(tmp_path)
    grid._run_processes(cfg, cells, tmp_path, LaunchOptions("processes", no_wait=True), res)
    assert launches == [first] and res.cells_pending == 6
    launches.clear()
    res = grid.BenchResult(tmp_path)
    grid._run_processes(cfg, cells, tmp_path, LaunchOptions("processes"), res)
    assert launches == [first, ["rd-unl-mix-ens@1500", "rd-unl-mix-ens@300"]] and res.cells_run == 6
    launches.clear()
    grid._run_processes(cfg, cells, tmp_path, LaunchOptions("processes", no_wait=True), grid.BenchResult(tmp_path))
    assert launches == []  # all finished: nothing to submit


def test_a_bench_stops_before_training_where_a_cell_it_distils_has_no_weights_here(tmp_path):
    """Results are committed without weights: on a fresh machine the ensemble row's co-teacher cells are finished
    but have no best.pt. The bench stops at once, naming them, instead of after hours of other cells."""
    from reprodistill.bench import run_bench
    from reprodistill.config import expand_budgets
    from reprodistill.errors import ReprodistillError

    cfg = expand_budgets(load_config("breast-bench", ["methods=[fixmatch-unl,rd-unl-mix,rd-unl-mix-ens]",
                                                      "bench.seeds=[4]", "bench.fractions=[0.1]",
                                                      "bench.steps=[300,1500]"]))  # fmt: skip
    cells = {c.method: c for c in bench_cells(cfg)}
    for row in ("fixmatch-unl@1500", "rd-unl-mix@300"):  # finished elsewhere, committed without best.pt
        cells[row].result_path(tmp_path).parent.mkdir(parents=True)
        cells[row].result_path(tmp_path).write_text("{}")
    (cells["rd-unl-mix@300"].result_path(tmp_path).parent / "best.pt").write_bytes(b"")  # this one trained here
    with pytest.raises(ReprodistillError, match=r"1 finished cells .* no best.pt") as err:
        run_bench(cfg, tmp_path)
    assert str(cells["fixmatch-unl@1500"].result_path(tmp_path)) in str(err.value)
    assert not (tmp_path / "cells" / "fixmatch-unl@300").exists()  # nothing trained
