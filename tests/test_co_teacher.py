"""RD with a co-teacher end to end: another run's student, loaded by the engine, its cost counted in the method's."""

import json

import pytest
import torch

from reprodistill.config import load_config
from reprodistill.engine.run import run
from reprodistill.errors import ReprodistillError


def test_rd_distils_a_finished_runs_student_too_and_pays_for_it(tiny_teacher, small_npz, tmp_path):
    tiny_teacher(32)  # writes tmp_path/fm.pt
    common = [
        f"data.source={small_npz}",
        "student.name=resnet10t",
        "train.epochs=1",
        "train.steps=null",
        "train.batch_size=16",
    ]
    first = run(load_config("default", common + ["methods=[student]"]), run_dir=tmp_path / "co")
    co_cost = first.results[0].transfer_s
    rd = common + [
        "methods=[rd]",
        f"teacher.name={tmp_path / 'fm.pt'}",
        "teacher.arch=resnet10t",
        "teacher.image_size=32",
        f"teacher.cache_dir={tmp_path / 'cache'}",
        f"method_options.rd.co_teacher={tmp_path / 'co'}",
    ]
    res = run(load_config("default", rd), run_dir=tmp_path / "rd").results[0]
    assert res.prepare_s >= co_cost > 0  # the co-teacher's training is part of what this student cost
    stored = torch.load(tmp_path / "rd" / "rd" / "best.pt", weights_only=False)["method"]
    assert not any(k.startswith("_co_teacher") for k in stored)
    assert json.loads((tmp_path / "rd" / "rd" / "result.json").read_text())["prepare_s"] == pytest.approx(
        res.prepare_s, abs=0.01
    )
    # an RD co-teacher read the same cached FM pass as this run: counted once (in this run's fm_feature_s)
    again = run(load_config("default", rd[:-1] + [f"method_options.rd.co_teacher={tmp_path / 'rd'}"]),
                run_dir=tmp_path / "rd2").results[0]  # fmt: skip
    spent = json.loads((tmp_path / "rd" / "rd" / "result.json").read_text())
    assert again.fm_feature_s == pytest.approx(spent["fm_feature_s"], abs=0.01) and again.fm_feature_s > 0
    own = again.prepare_s - (spent["train_time_s"] + spent["prepare_s"])  # its own preparation, and no second pass
    assert 0 <= own < again.fm_feature_s
    # a co-teacher trained on another subset of the training images may have seen this run's val / test images
    with pytest.raises(ReprodistillError, match="trained on other images than this run"):
        run(load_config("default", rd + ["data.fraction=0.5"]), run_dir=tmp_path / "other")


def test_a_bench_row_distils_the_same_seeds_cell_of_another_row(tiny_teacher, small_npz, tmp_path):
    """`co_teacher: cell:student` in a bench: the cell keeps the name in its config (so that its folder resumes
    under any spelling of --dir, or moved), its run finds the student row's cell of its seed beside it, and pays
    for it."""
    import yaml

    from reprodistill.bench import run_bench

    tiny_teacher(32)
    cfg = load_config("default", [
        f"data.source={small_npz}", "student.name=resnet10t", "train.epochs=1", "train.steps=null",
        "train.batch_size=16", f"teacher.name={tmp_path / 'fm.pt'}", "teacher.arch=resnet10t", "teacher.image_size=32",
        f"teacher.cache_dir={tmp_path / 'cache'}", "methods=[rd-co,student]", "bench.seeds=[1]",
        "bench.fractions=[1.0]", "bench.variants.rd-co={method: rd, options: {co_teacher: 'cell:student'}}",
    ])  # fmt: skip
    res = run_bench(cfg, tmp_path / "bench", plots=False)
    assert res.cells_run == 2
    cell = tmp_path / "bench" / "cells" / "rd-co" / "frac1-seed1"
    assert yaml.safe_load((cell / "config.yaml").read_text())["method_options"]["rd"]["co_teacher"] == "cell:student"
    student = json.loads(
        (tmp_path / "bench" / "cells" / "student" / "frac1-seed1" / "student" / "result.json").read_text()
    )
    rd = json.loads((cell / "rd" / "result.json").read_text())
    assert rd["prepare_s"] >= student["train_time_s"] > 0  # the co-teacher's training is part of this row's cost
    assert (
        "co-teacher: the student student of " + str(tmp_path / "bench" / "cells" / "student")
        in (cell / "log.txt").read_text()
    )
