"""Deployment: export (safetensors + config.json + ONNX checked with ONNX Runtime) and predict from the export only."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from reprodistill.config import load_config
from reprodistill.engine.export import export_run, load_exported, predict_files
from reprodistill.engine.run import run
from reprodistill.errors import ReprodistillError


@pytest.fixture()
def trained_run(small_npz, tmp_path):
    cfg = load_config(
        "default",
        [
            f"data.source={small_npz}",
            "methods=[student]",
            "data.class_names=[normal,pneumonia]",  # an npz has no label names; the user gives them
            "student.name=resnet10t",
            "train.epochs=1",
            "train.steps=null",
            "train.batch_size=16",
        ],
    )
    run(cfg, run_dir=tmp_path / "run")
    return tmp_path / "run"


def test_export_and_predict_match_the_trained_student(trained_run, small_npz, tmp_path):
    res = export_run(trained_run)
    assert res.method == "student" and res.onnx_max_abs_diff < 1e-4
    for name in ("model.safetensors", "config.json", "model.onnx"):
        assert (res.directory / name).is_file()
    config = json.loads((res.directory / "config.json").read_text())
    assert config["arch"] == "resnet10t" and config["class_names"] == ["normal", "pneumonia"]
    assert config["load"] == {"size": [28, 28], "channels": 1}

    # the same images, as files a user would have: predictions equal the run's own test-time probabilities
    with np.load(small_npz) as z:
        images = z["test_images"][:6]
    paths = []
    for i, img in enumerate(images):
        paths.append(tmp_path / "imgs" / f"{i}.png")
        paths[-1].parent.mkdir(exist_ok=True)
        Image.fromarray(img).save(paths[-1])
    rows = predict_files(trained_run, [str(tmp_path / "imgs")])
    assert [r["path"] for r in rows] == [str(p) for p in sorted(paths)]
    student, _ = load_exported(res.directory)
    from reprodistill.data.transforms import preprocess

    x = preprocess(torch.from_numpy(images[np.argsort([str(p) for p in paths])])[:, None], student.spec)
    # probabilities are calibrated with the temperature the run fitted on validation (stored with the test metrics)
    temperature = json.loads((trained_run / config["method"] / "test_metrics.json").read_text())["calibration"][
        "temperature"
    ]
    assert config["temperature"] == temperature and temperature > 0
    with torch.inference_mode():
        expected = (student(x) / temperature).softmax(-1).numpy()
    got = np.array([[r["probabilities"]["normal"], r["probabilities"]["pneumonia"]] for r in rows])
    assert np.allclose(got, expected, atol=1e-5)
    assert {r["label"] for r in rows} <= {"normal", "pneumonia"}


def test_validation_predictions_are_the_checkpoints_own(trained_run, small_npz):
    """val_predictions.csv holds the reported checkpoint's calibrated outputs on every validation image: they give the
    validation scores result.json stores and equal the exported student's probabilities (an operating point can be
    chosen on validation from the run's files, without the weights)."""
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    from reprodistill.data.transforms import preprocess

    rows = list(csv.DictReader(open(trained_run / "student" / "val_predictions.csv")))
    with np.load(small_npz) as z:
        images, labels = z["val_images"], z["val_labels"].ravel()
    assert [int(r["index"]) for r in rows] == list(range(len(labels)))
    assert [int(r["label"]) for r in rows] == labels.tolist()
    p = np.array([[float(r["p0"]), float(r["p1"])] for r in rows])
    val = json.loads((trained_run / "student" / "result.json").read_text())["val"]
    assert balanced_accuracy_score(labels, p.argmax(1)) == pytest.approx(val["balanced_accuracy"])
    assert roc_auc_score(labels, p[:, 1]) == pytest.approx(val["auc"], abs=1e-4)  # 6-decimal probabilities
    res = export_run(trained_run, onnx=False)
    student, config = load_exported(res.directory)
    with torch.inference_mode():
        expected = (
            student(preprocess(torch.from_numpy(images)[:, None], student.spec)) / config["temperature"]
        ).softmax(-1)
    assert np.allclose(p, expected.numpy(), atol=1e-5)


def test_predict_cli_writes_csv_and_json(trained_run, pneumonia_arrays, tmp_path):
    export_run(trained_run, onnx=False)
    img = tmp_path / "x.png"
    Image.fromarray(pneumonia_arrays["test_images"][0]).convert("RGB").save(img)  # RGB input to a 1-channel model
    for suffix in ("csv", "json"):
        out = tmp_path / f"pred.{suffix}"
        proc = subprocess.run(
            [sys.executable, "-m", "reprodistill", "predict", str(trained_run), str(img), "--out", str(out)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-1500:]
        assert proc.stdout.splitlines()[0] == "path\tlabel\tnormal\tpneumonia"
    rows = list(csv.DictReader(open(tmp_path / "pred.csv")))
    assert rows[0]["path"] == str(img) and abs(float(rows[0]["p_normal"]) + float(rows[0]["p_pneumonia"]) - 1) < 1e-5
    assert json.loads((tmp_path / "pred.json").read_text())[0]["label"] == rows[0]["label"]


def test_export_and_predict_errors(trained_run, tmp_path):
    with pytest.raises(ReprodistillError, match="no trained method 'rd'"):
        export_run(trained_run, method="rd")
    with pytest.raises(ReprodistillError, match="not an exported model"):
        load_exported(tmp_path)
    export_run(trained_run, onnx=False)
    with pytest.raises(ReprodistillError, match="no such file or folder"):
        predict_files(trained_run, [str(tmp_path / "missing.png")])


def test_existing_run_folder_is_never_overwritten(trained_run):
    import yaml

    from reprodistill.config import RunConfig, from_dict

    cfg = from_dict(RunConfig, yaml.safe_load((trained_run / "config.yaml").read_text()))
    before = (trained_run / "student" / "metrics.csv").read_text()
    again = run(cfg, run_dir=trained_run)  # same config: resumed, the finished epoch is not trained again
    assert (trained_run / "student" / "metrics.csv").read_text() == before
    assert (
        again.results[0].test["auc"] == json.loads((trained_run / "student" / "test_metrics.json").read_text())["auc"]
    )
    cfg.train.epochs = 5
    with pytest.raises(ReprodistillError, match=r"different config \(changed: \['train.epochs'\]\)"):
        run(cfg, run_dir=trained_run)
    # a run started before a config key existed resumes when this run leaves the key at its default, not otherwise
    cfg.train.epochs = 1
    saved = yaml.safe_load((trained_run / "config.yaml").read_text())
    del saved["data"]["unlabelled"]
    (trained_run / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    assert run(cfg, run_dir=trained_run).results[0].test["auc"] == again.results[0].test["auc"]
    (trained_run / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    cfg.data.unlabelled = "rest"
    with pytest.raises(ReprodistillError, match=r"changed: \['data.unlabelled'\]"):
        run(cfg, run_dir=trained_run)


def test_export_of_a_folder_that_is_not_a_run_says_so(tmp_path):
    from reprodistill.engine.export import export_run
    from reprodistill.errors import ReprodistillError

    with pytest.raises(ReprodistillError, match="not a reprodistill run folder"):
        export_run(tmp_path)


def test_predict_skips_undecodable_files_lists_them_and_survives_a_closed_pipe(trained_run, pneumonia_arrays, tmp_path):
    export_run(trained_run, onnx=False)
    good = tmp_path / "imgs"
    good.mkdir()
    for i in range(3):
        Image.fromarray(pneumonia_arrays["test_images"][i]).save(good / f"{i}.png")
    (good / "broken.png").write_bytes(b"not an image")
    skipped = []
    rows = predict_files(trained_run, [str(good)], skipped=skipped)
    assert len(rows) == 3 and len(skipped) == 1 and "broken.png: cannot decode image" in skipped[0]
    (good / "more").mkdir()
    for i in range(200):  # enough output to fill the pipe after `head` has gone
        Image.fromarray(pneumonia_arrays["test_images"][i % 3]).save(good / "more" / f"{i}.png")
    cmd = f"{sys.executable} -m reprodistill predict {trained_run} {good} | head -n 2"
    proc = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=300)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr[-1500:]
    assert "skipped unreadable image" in proc.stderr and len(proc.stdout.splitlines()) == 2
    (good / "more").rename(tmp_path / "aside")
    for f in good.glob("*.png"):
        f.write_bytes(b"junk")
    with pytest.raises(ReprodistillError, match="none of the 4 image files could be decoded"):
        predict_files(trained_run, [str(good)])


@pytest.mark.parametrize(("select", "expected"), [("last", "kd"), ("loss", "student"), ("auc", "kd")])
def test_export_without_method_picks_the_student_by_the_runs_validation_rule(tmp_path, select, expected):
    from reprodistill.engine.export import pick_student_method
    from reprodistill.engine.run_dir import RunDir

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(f"train:\n  select_metric: {select}\n")
    rows = [  # test AUC would pick the probe (deploys the FM) or the student; validation decides
        {"method": "student", "auc": 0.99, "val_auc": 0.80, "val_loss": 0.20},
        {"method": "kd", "auc": 0.70, "val_auc": 0.90, "val_loss": 0.50},
        {"method": "linear_probe", "auc": 0.99, "val_auc": 0.99, "val_loss": 0.01},
    ]
    with open(run_dir / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    assert pick_student_method(RunDir(run_dir), None) == expected


def test_export_picks_by_balanced_accuracy_where_validation_auc_saturates(tmp_path):
    from reprodistill.engine.export import pick_student_method
    from reprodistill.engine.run_dir import RunDir

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("train:\n  select_metric: last\n")
    rows = [{"method": "fixmatch", "val_auc": 0.9992, "val_balanced_accuracy": 0.90},
            {"method": "rd", "val_auc": 0.9990, "val_balanced_accuracy": 0.95}]  # fmt: skip
    with open(run_dir / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    assert pick_student_method(RunDir(run_dir), None) == "rd"  # AUC 0.9992 vs 0.9990 is noise; 0.95 vs 0.90 is not


def test_co_teacher_is_the_finished_runs_frozen_student_and_only_on_the_same_images(trained_run, tmp_path):
    """A co-teacher loads as the run's own student (frozen, eval mode, the RNG stream of the run untouched), by its
    folder or in a bench as `cell:<row>` beside the run's cell; one trained on another subset of the data, which may
    hold this run's validation or test images, is refused."""
    from types import SimpleNamespace

    import yaml

    from reprodistill.config import RunConfig, from_dict
    from reprodistill.data import load_data
    from reprodistill.engine.co_teacher import load_co_teachers, resolve_co_teacher
    from reprodistill.engine.export import load_trained_student
    from reprodistill.errors import ConfigError

    cfg = from_dict(RunConfig, yaml.safe_load((trained_run / "config.yaml").read_text()))
    data = load_data(cfg.data)
    rng = torch.get_rng_state()
    (trained,) = load_co_teachers(
        SimpleNamespace(co_teacher=str(trained_run)), cfg, data, torch.device("cpu"), tmp_path
    )
    assert torch.equal(torch.get_rng_state(), rng)
    co = trained.student
    assert not co.training and not any(p.requires_grad for p in co.parameters())
    stored = json.loads((trained_run / "student" / "result.json").read_text())
    spent = stored["train_time_s"] + stored["fm_feature_s"] + stored["prepare_s"]
    assert trained.transfer_s == pytest.approx(spent) and trained.transfer_s > 0
    x = torch.randn(4, 3, 28, 28)
    with torch.no_grad():
        assert torch.equal(co(x), load_trained_student(trained_run).student(x))
    cpu, here = torch.device("cpu"), tmp_path / "here"
    assert load_co_teachers(SimpleNamespace(co_teacher=None), cfg, data, cpu, here) == []
    both = load_co_teachers(SimpleNamespace(co_teacher=[str(trained_run)] * 2), cfg, data, cpu, here)
    assert len(both) == 2
    # in a bench, cell:<row> is the same fraction and seed's cell of that row, beside this run's cell
    bench_cell = tmp_path / "bench" / "cells" / "student-row" / "frac1-seed0"
    bench_cell.parent.mkdir(parents=True)
    bench_cell.symlink_to(trained_run, target_is_directory=True)
    mine = tmp_path / "bench" / "cells" / "rd-row" / "frac1-seed0"
    assert resolve_co_teacher("cell:student-row", mine) == bench_cell
    assert len(load_co_teachers(SimpleNamespace(co_teacher="cell:student-row"), cfg, data, cpu, mine)) == 1
    with pytest.raises(ConfigError, match="is not a bench cell"):
        load_co_teachers(SimpleNamespace(co_teacher="cell:student-row"), cfg, data, cpu, here)
    cfg.data.subset_seed = 7  # another subset of the training images
    with pytest.raises(
        ReprodistillError, match=r"trained on other images than this run \(data.subset_seed None there, 7 here"
    ):
        load_co_teachers(SimpleNamespace(co_teacher=str(trained_run)), cfg, data, cpu, here)


def test_a_run_without_its_checkpoint_says_how_to_get_one(trained_run):
    """Bench cells are committed without weights: on another machine a co-teacher's cell has no best.pt."""
    from reprodistill.engine.export import load_trained_student

    (trained_run / "student" / "best.pt").unlink()
    with pytest.raises(ReprodistillError, match="best.pt is missing .* delete its result.json and rerun the bench"):
        load_trained_student(trained_run)
