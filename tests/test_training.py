"""The shared training loop on small real subsets: a model that learns, checkpoints, and exact resume."""

import csv
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import balanced_subset_npz

from reprodistill.config import DataConfig, RunConfig, StudentConfig, TrainConfig
from reprodistill.data import ImageDataset, load_data
from reprodistill.engine.loop import class_weights, evaluate, fit, seed_everything
from reprodistill.errors import ReprodistillError
from reprodistill.features.split import FeatureSplit
from reprodistill.methods import METHODS, MethodContext
from reprodistill.models import create_student
from reprodistill.util.checkpoint import load_checkpoint


@pytest.fixture()
def medium_npz(tmp_path, pneumonia_arrays) -> Path:
    """Real balanced subset: 300 train / 100 val / 200 test images."""
    return balanced_subset_npz(
        tmp_path / "medium.npz", pneumonia_arrays, {"train": 300, "val": 100, "test": 200}, seed=1
    )


def _setup(npz: Path, train_cfg: TrainConfig, student: str = "resnet18"):
    cfg = RunConfig(
        methods=["student"], data=DataConfig(source=str(npz)), student=StudentConfig(name=student), train=train_cfg
    )
    data = load_data(cfg.data)
    seed_everything(train_cfg.seed)
    st = create_student(cfg.student, data.num_classes, data.load_size)
    ctx = MethodContext(
        cfg=cfg, num_classes=2, student=st, class_weights=class_weights(data.train.labels, 2, train_cfg.class_weights)
    )
    method = METHODS.get("student")(ctx, METHODS.get("student").parse_options({}))
    splits = {
        s: FeatureSplit(ImageDataset(getattr(data, s), data.channels, data.load_size)) for s in ("train", "val", "test")
    }
    return method, splits


def test_student_learns_on_real_xrays(medium_npz, tmp_path):
    tc = TrainConfig(epochs=4, batch_size=32, lr=2e-3, device="cpu")
    method, splits = _setup(medium_npz, tc)
    before = evaluate(method, splits["test"], tc, torch.device("cpu"))
    result = fit(method, splits["train"], splits["val"], tc, tmp_path / "run", torch.device("cpu"))
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < 0.7 * losses[0], losses
    method.load_state_dict(load_checkpoint(tmp_path / "run" / "best.pt")["method"])
    after = evaluate(method, splits["test"], tc, torch.device("cpu"))
    assert after["auc"] > 0.85 and after["auc"] > before["auc"] + 0.1, (before["auc"], after["auc"])
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0]
    assert header.startswith("epoch,train_loss,train_ce,val_loss,val_accuracy,val_balanced_accuracy")
    assert len((tmp_path / "run" / "metrics.csv").read_text().splitlines()) == 5


def test_resumed_run_equals_uninterrupted_run(small_npz, tmp_path):
    tc = TrainConfig(epochs=3, batch_size=16, lr=1e-3, device="cpu", augment_shift=2, augment_flip=True)
    method, splits = _setup(small_npz, tc, student="resnet10t")
    full = fit(method, splits["train"], splits["val"], tc, tmp_path / "full", torch.device("cpu"))
    full_state = method.state_dict()

    method, splits = _setup(small_npz, tc, student="resnet10t")
    calls = {"n": 0}
    original = method.forward

    def crash_in_third_epoch(batch):
        calls["n"] += 1
        if calls["n"] == 2 * 4 + 2:  # 60 images / 16 = 4 steps per epoch: crash mid-epoch 3
            raise KeyboardInterrupt
        return original(batch)

    method.forward = crash_in_third_epoch
    with pytest.raises(KeyboardInterrupt):
        fit(method, splits["train"], splits["val"], tc, tmp_path / "resumed", torch.device("cpu"))
    torch.manual_seed(12345)  # disturb the global RNG: resume must restore it
    method, splits = _setup(small_npz, tc, student="resnet10t")
    resumed = fit(method, splits["train"], splits["val"], tc, tmp_path / "resumed", torch.device("cpu"), resume=True)
    assert [r["val_auc"] for r in resumed.history] == [r["val_auc"] for r in full.history]
    for k, v in method.state_dict().items():
        assert torch.allclose(v.float(), full_state[k].float(), atol=1e-6), k


def test_diverging_loss_stops_with_clear_message(small_npz, tmp_path):
    tc = TrainConfig(epochs=1, batch_size=16, device="cpu")
    method, splits = _setup(small_npz, tc, student="resnet10t")
    original = method.forward

    def nan_loss(batch):
        out = original(batch)
        out.parts["ce"] = out.loss * float("nan")
        out.loss = out.parts["ce"]
        return out

    method.forward = nan_loss
    with pytest.raises(ReprodistillError, match=r"loss became nan at epoch 1 \(diverged parts: \['ce'\]\)"):
        fit(method, splits["train"], splits["val"], tc, tmp_path / "nan", torch.device("cpu"))


def test_balanced_class_weights():
    w = class_weights(np.array([0] * 10 + [1] * 90), 2, "balanced")
    assert torch.allclose(w, torch.tensor([5.0, 100 / 180]))
    assert class_weights(np.array([0, 1]), 2, "none") is None


def test_disk_full_is_reported_and_keeps_the_old_file(tmp_path, monkeypatch):
    import errno

    from reprodistill.util.checkpoint import write_text

    target = tmp_path / "metrics.csv"
    write_text(target, "old\n")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("pathlib.Path.write_text", full)
    with pytest.raises(ReprodistillError, match="disk full while writing .*metrics.csv; the previous version"):
        write_text(target, "new\n")
    monkeypatch.undo()
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]


@pytest.mark.parametrize("select", ["last", "loss"])
def test_reported_checkpoint_follows_the_selection_rule(small_npz, tmp_path, select):
    tc = TrainConfig(epochs=3, batch_size=16, lr=3e-3, device="cpu", select_metric=select)
    method, splits = _setup(small_npz, tc, student="resnet10t")
    result = fit(method, splits["train"], splits["val"], tc, tmp_path / "run", torch.device("cpu"))
    losses = [row["val_loss"] for row in result.history]
    expected = len(losses) if select == "last" else 1 + int(np.argmin(losses))
    assert load_checkpoint(tmp_path / "run" / "best.pt")["epoch"] + 1 == expected


def test_retest_reproduces_stored_metrics_and_keeps_training_figures(small_npz, tmp_path):
    """`--retest` tests the stored best.pt again with the current evaluation code; nothing trains."""
    import json

    from reprodistill.engine.run import retest_run, run

    cfg = RunConfig(
        methods=["student"],
        data=DataConfig(source=str(small_npz)),
        student=StudentConfig(name="resnet10t"),
        train=TrainConfig(epochs=1, steps=None, batch_size=16, device="cpu"),
    )
    run_dir = tmp_path / "run"
    first = run(cfg, run_dir=run_dir).results[0]
    stored = run_dir / "student" / "result.json"
    tampered = json.loads(stored.read_text())
    tampered["test"]["auc"] = 0.123  # as if measured by an older, wrong metric
    stored.write_text(json.dumps(tampered))
    config_before = (run_dir / "config.yaml").read_text()
    best_before = (run_dir / "student" / "best.pt").stat().st_mtime_ns

    again = retest_run(run_dir).results[0]
    assert again.test["auc"] == first.test["auc"] != 0.123
    assert again.test["confusion_matrix"] == first.test["confusion_matrix"] and again.val == first.val
    assert again.train_time_s == first.train_time_s and again.best_epoch == first.best_epoch  # training kept
    assert json.loads(stored.read_text())["test"]["auc"] == first.test["auc"]
    assert (run_dir / "config.yaml").read_text() == config_before  # still describes the training
    assert (run_dir / "student" / "best.pt").stat().st_mtime_ns == best_before
    assert "retested_at" in json.loads((run_dir / "retest.json").read_text())
    with pytest.raises(ReprodistillError, match="holds no run"):
        retest_run(tmp_path / "empty")


def test_calibration_fits_the_validation_loss_and_leaves_ranking_metrics_alone():
    """The deployed model's temperature minimises the class-weighted validation CE; applied to test it changes the
    loss only (AUC and argmax metrics are invariant to a positive scale)."""
    from reprodistill.engine.loop import calibration, metrics_of
    from reprodistill.losses import scaled_nll

    g = torch.Generator().manual_seed(0)

    def preds(n):
        y = torch.randint(0, 2, (n,), generator=g)
        z = 25 * (torch.randn(n, 2, generator=g) + torch.nn.functional.one_hot(y, 2))  # overconfident logits
        lp = z.double().log_softmax(-1).numpy()
        w = torch.tensor([2.0, 1.0])
        return {"model": lp}, y.numpy(), scaled_nll(torch.from_numpy(lp), y, 1.0, w)

    val, test = preds(300), preds(200)
    w = torch.tensor([2.0, 1.0])
    c = calibration(val, test, w)
    assert c["temperature"] > 5  # the logits were blown up 25x
    assert c["val_loss_calibrated"] < 0.5 * c["val_loss"] and c["test_loss_calibrated"] < c["test_loss"]
    s = 1 / c["temperature"]
    v = torch.from_numpy(val[0]["model"])
    for other in (s * 0.9, s * 1.1):  # a minimum of the validation loss
        assert c["val_loss_calibrated"] <= scaled_nll(v, torch.from_numpy(val[1]), other, w)
    scaled = ({"model": test[0]["model"] * s}, test[1], c["test_loss_calibrated"])
    before, after = metrics_of(test), metrics_of(scaled)
    assert all(before[k] == after[k] for k in ("accuracy", "balanced_accuracy", "macro_f1", "auc"))


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_starts_the_iterable_once_on_a_terminal_and_off_one(monkeypatch):
    """A DataLoader started twice draws its base seed from the global RNG twice (tqdm.auto's class did that on a
    terminal), which shifts every later dropout mask: the bar must not start what it wraps."""
    from reprodistill.util import progress as progress_mod

    class Counted:
        starts = 0

        def __iter__(self):
            Counted.starts += 1
            return iter(range(5))

        def __len__(self):
            return 5

    for terminal in (False, True):
        Counted.starts = 0
        monkeypatch.setattr(progress_mod.sys, "stderr", _Terminal() if terminal else io.StringIO())
        assert list(progress_mod.progress(Counted(), "x")) == [0, 1, 2, 3, 4]
        assert Counted.starts == 1, terminal


def test_a_run_trains_the_same_whether_stderr_is_a_terminal_or_a_log(small_npz, tmp_path, monkeypatch):
    """Same seed, same numbers, with a progress bar (terminal) or log lines (redirected); dropout draws from the
    global RNG, so an extra draw in the bar's path would change them (it did: RD on BreastMNIST seed 0, validation
    AUC 0.829 on a terminal vs 0.764 redirected)."""
    from reprodistill.config import load_config
    from reprodistill.engine.run import run
    from reprodistill.util import progress as progress_mod

    cfg = load_config("default", [f"data.source={small_npz}", "methods=[student]", "student.name=resnet10t",
                                  "student.drop_rate=0.5", "train.epochs=2", "train.steps=6",
                                  "train.batch_size=16"])  # fmt: skip
    curves = []
    for terminal in (False, True):
        monkeypatch.setattr(progress_mod.sys, "stderr", _Terminal() if terminal else io.StringIO())
        run(cfg, run_dir=tmp_path / f"tty{terminal}")
        rows = csv.DictReader(open(tmp_path / f"tty{terminal}" / "student" / "metrics.csv"))
        curves.append([{k: v for k, v in r.items() if k != "epoch_time_s"} for r in rows])
    assert curves[0] == curves[1]
