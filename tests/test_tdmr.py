"""TDMR: schedule values, stage 1 trains the prompt through the frozen FM, stage 2 wiring, ablation switches."""

import pytest
import torch
from conftest import build_method

from reprodistill.config import RunConfig, StudentConfig
from reprodistill.features.split import FeatureSplit
from reprodistill.methods import MethodContext
from reprodistill.methods.tdmr import schedule_weights
from reprodistill.models import create_student


@pytest.mark.parametrize(
    ("schedule", "p", "expected"),
    [
        ("progressive", 0.0, {"feat": 1.0, "kd": 0.0, "ce": 0.0, "T": 4.0}),
        ("progressive", 0.5, {"feat": 0.5, "kd": 0.5, "ce": 0.5, "T": 2.5}),
        ("progressive", 1.0, {"feat": 0.0, "kd": 1.0, "ce": 1.0, "T": 1.0}),
        ("stepwise", 0.1, {"feat": 1.0, "kd": 0.0, "ce": 0.0, "T": 4.0}),
        ("stepwise", 0.5, {"feat": 0.0, "kd": 1.0, "ce": 0.0, "T": 4.0}),
        ("stepwise", 0.9, {"feat": 0.0, "kd": 1.0, "ce": 1.0, "T": 4.0}),
        ("constant", 0.7, {"feat": 1.0, "kd": 1.0, "ce": 1.0, "T": 4.0}),
    ],
)
def test_schedule_values(schedule, p, expected):
    assert schedule_weights(schedule, p, 4.0, 1.0) == pytest.approx(expected)


class _Dataset:
    size, channels = (28, 28), 1

    def __init__(self, images, labels):
        self.images = images
        self.split = type("S", (), {"labels": labels.numpy(), "images": images.numpy(), "paths": None})()

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i], "label": torch.tensor(int(self.split.labels[i])), "index": torch.tensor(i)}


@pytest.fixture()
def tdmr_setup(tiny_teacher):
    teacher = tiny_teacher(32)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (24, 1, 28, 28), dtype=torch.uint8, generator=g)
    labels = torch.arange(24) % 2
    train = FeatureSplit(_Dataset(images, labels))

    def make(cache_dir=None, **opts):
        torch.manual_seed(0)
        student = create_student(StudentConfig(name="resnet10t"), num_classes=2, default_size=(28, 28))
        cfg = RunConfig(methods=["tdmr"])
        cfg.teacher.cache_dir = cache_dir and str(cache_dir)
        ctx = MethodContext(cfg=cfg, num_classes=2, student=student, teacher=teacher)
        return build_method("tdmr", ctx, **{"stage1_epochs": 2, "stage1_batch_size": 8, "pad": 4, **opts})

    batch = {"image": images[:8], "label": labels[:8], "index": torch.arange(8)}
    return teacher, train, make, batch


def test_stage1_trains_prompt_projection_and_classifier_never_the_fm(tdmr_setup):
    teacher, train, make, _ = tdmr_setup
    fm_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    method = make()
    head_before = method.reprogrammed.classifier.weight.clone()
    method.prepare(train, torch.device("cpu"))
    assert method.reprogrammed.prompt.weight.abs().sum() > 0  # moved from its zero init: gradients reached the prompt
    assert (
        method.reprogrammed.prompt.weight * (1 - method.reprogrammed.prompt.mask)
    ).abs().sum() == 0  # only the frame
    assert not torch.equal(method.reprogrammed.classifier.weight, head_before)
    assert all(torch.equal(v, fm_before[k]) for k, v in teacher.state_dict().items())
    assert method.proxy_train.shape == (24, 256) and method.logits_train.shape == (24, 2)
    assert not any(p.requires_grad for m in method.reprogrammed.parts() for p in m.parameters())


def test_stage2_loss_follows_the_schedule_and_trains_the_student_side(tdmr_setup):
    _, train, make, batch = tdmr_setup
    method = make(prompt="none")
    method.prepare(train, torch.device("cpu"))
    method.train()
    method.progress = 0.0
    out = method(batch)
    assert out.loss.item() == pytest.approx(out.parts["feat"].item(), rel=1e-5)  # features only at the start
    out.loss.backward()
    assert method.student_projector.weight.grad.abs().sum() > 0
    assert method.student.model.conv1[0].weight.grad.abs().sum() > 0
    method.progress = 1.0
    out = method(batch)
    p = out.parts
    assert out.loss.item() == pytest.approx(p["kd"].item() + p["ce"].item(), rel=1e-5)
    assert out.logged["T"] == pytest.approx(1.0)
    # the reprogrammed FM is reported beside the student
    assert method.extra_logits(batch)["reprogrammed_fm"].shape == (8, 2)


def test_ablation_switches(tdmr_setup):
    _, train, make, _ = tdmr_setup
    no_proxy = make(proxy="none", prompt="none", stage1_epochs=1)
    no_proxy.prepare(train, torch.device("cpu"))
    assert no_proxy.proxy_train.shape[1] == no_proxy.teacher.feature_dim  # the proxy space is the FM's own
    assert no_proxy.reprogrammed.prompt is None


def test_stage1_step_cap(tdmr_setup):
    _, train, make, _ = tdmr_setup
    method = make(stage1_epochs=5, stage1_max_steps=4)  # 5 epochs would be 15 steps of 8
    method.prepare(train, torch.device("cpu"))
    assert method.reprogrammed.steps == 4


def test_stage1_is_stored_and_reused_when_only_stage2_changes(tmp_path, tdmr_setup):
    _, train, make, _ = tdmr_setup
    first = make(cache_dir=tmp_path)
    first.prepare(train, torch.device("cpu"))
    assert first.reprogrammed.steps == 6 and len(list(tmp_path.glob("tdmr-stage1-*.pt"))) == 1
    # same stage 1, different stage-2 schedule (an ablation): loaded, not retrained, and identical
    again = make(cache_dir=tmp_path, schedule="constant")
    again.prepare(train, torch.device("cpu"))
    assert again.reprogrammed.steps == 0
    assert again.prepare_s > 0  # the stored stage 1's original cost, so the transfer cost stays honest
    assert torch.equal(again.proxy_train, first.proxy_train) and torch.equal(again.logits_train, first.logits_train)
    assert torch.equal(again.reprogrammed.prompt.weight, first.reprogrammed.prompt.weight)
    assert not any(p.requires_grad for m in again.reprogrammed.parts() for p in m.parameters())
    # a stage-1 option changes the key: trained anew, into a second entry
    other = make(cache_dir=tmp_path, stage1_lr=3e-3)
    other.prepare(train, torch.device("cpu"))
    assert other.reprogrammed.steps == 6 and len(list(tmp_path.glob("tdmr-stage1-*.pt"))) == 2


def test_without_prompt_stage1_reads_the_cached_fm_features(tmp_path, tdmr_setup):
    teacher, train, make, _ = tdmr_setup
    method = make(cache_dir=tmp_path, prompt="none", stage1_lr=5e-3)
    method.prepare(train, torch.device("cpu"))
    pooled = [p for p in tmp_path.glob("*.npy")]
    assert len(pooled) == 1  # the same fixed-view pooled entry the linear probe and KD methods use
    # a second stage 1 (other options) reads that entry and still counts the FM pass it once cost
    again = make(cache_dir=tmp_path, prompt="none", stage1_lr=2e-3)
    again.prepare(train, torch.device("cpu"))
    assert again._reused_fm_pass_s > 0 and again.prepare_s >= again._reused_fm_pass_s
    import numpy as np

    with torch.no_grad():
        direct = teacher.features(train.dataset.images)
    assert np.allclose(np.load(pooled[0]), direct.numpy(), atol=1e-2)


def test_tdmr_with_a_transformer_fm_from_a_local_checkpoint(tmp_path, tdmr_setup):
    import timm

    from reprodistill.config import TeacherConfig
    from reprodistill.models import create_teacher

    _, train, _, batch = tdmr_setup
    torch.manual_seed(0)
    torch.save(timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=0).state_dict(), tmp_path / "vit.pt")
    vit = create_teacher(TeacherConfig(name=str(tmp_path / "vit.pt"), arch="vit_tiny_patch16_224", image_size=32))
    student = create_student(StudentConfig(name="resnet10t"), num_classes=2, default_size=(28, 28))
    cfg = RunConfig(methods=["tdmr"])
    cfg.teacher.cache_dir = None
    ctx = MethodContext(cfg=cfg, num_classes=2, student=student, teacher=vit)
    method = build_method("tdmr", ctx, stage1_epochs=1, stage1_batch_size=8, pad=4)
    method.prepare(train, torch.device("cpu"))
    assert method.reprogrammed.prompt.weight.abs().sum() > 0
    method.train()
    method(batch).loss.backward()
    assert method.student_projector.weight.grad is not None


def test_head_warm_up_trains_projection_and_classifier_before_any_fm_backward(tdmr_setup):
    _, train, make, _ = tdmr_setup
    method = make(stage1_head_epochs=3, stage1_max_steps=0)
    head_before = method.reprogrammed.classifier.weight.clone()
    method.prepare(train, torch.device("cpu"))
    assert (
        method.reprogrammed.steps == 0 and method.reprogrammed.prompt.weight.abs().sum() == 0
    )  # no step through the FM
    assert not torch.equal(method.reprogrammed.classifier.weight, head_before)


def _tdmr_on(teacher, **opts):
    torch.manual_seed(0)
    student = create_student(StudentConfig(name="resnet10t"), num_classes=2, default_size=(28, 28))
    cfg = RunConfig(methods=["tdmr"])
    cfg.teacher.cache_dir = None
    ctx = MethodContext(cfg=cfg, num_classes=2, student=student, teacher=teacher)
    return build_method("tdmr", ctx, **{"stage1_epochs": 2, "stage1_batch_size": 8, "pad": 4, **opts})


@pytest.mark.parametrize("label_map", ["iterative", "frequency"])
def test_label_mapped_stage1_trains_only_the_prompt_through_the_fm_head(tdmr_setup, label_map):
    import timm

    from reprodistill.models.teacher import TimmTeacher

    _, train, _, _ = tdmr_setup
    torch.manual_seed(0)
    fm = TimmTeacher("tiny-head", timm.create_model("resnet10t", num_classes=10), 32)
    fm_before = {k: v.clone() for k, v in fm.state_dict().items()}
    method = _tdmr_on(fm, output="label_map", label_map=label_map)
    assert [type(m).__name__ for m in method.reprogrammed.parts()] == ["VisualPrompt", "BatchNorm1d", "MappedHead"]
    method.prepare(train, torch.device("cpu"))
    mapping = method.reprogrammed.classifier.mapping
    assert len(set(mapping.tolist())) == 2 and all(0 <= s < 10 for s in mapping.tolist())  # one-to-one
    assert method.reprogrammed.prompt.weight.abs().sum() > 0 and method.reprogrammed.steps == 6
    assert all(torch.equal(v, fm_before[k]) for k, v in fm.state_dict().items())
    assert method.proxy_train.shape == (24, fm.feature_dim)  # the FM's own (standardised) feature space
    with torch.no_grad():  # the stored targets are the FM's own scores of the mapped source classes
        f = fm(method.reprogrammed.prompt(train.dataset.images))
        assert torch.allclose(method.logits_train, fm.class_head()(f)[:, mapping], atol=1e-4)


def test_label_map_and_learnable_resize_options_are_checked(tdmr_setup):
    from reprodistill.errors import ConfigError

    teacher, train, make, _ = tdmr_setup
    with pytest.raises(ConfigError, match="class head"):
        make(output="label_map")  # the tiny test FM has no class head
    with pytest.raises(ConfigError, match="proxy"):
        import timm

        from reprodistill.models.teacher import TimmTeacher

        _tdmr_on(
            TimmTeacher("h", timm.create_model("resnet10t", num_classes=10), 32), output="label_map", proxy="linear"
        )
    method = make(resize="learnable")
    scale = method.reprogrammed.prompt.scale.item()
    method.prepare(train, torch.device("cpu"))
    assert method.reprogrammed.prompt.scale.item() != scale  # the image's scale on the canvas trained in stage 1


def test_stage2_distils_on_unlabelled_images_that_stage1_never_trained_on(tdmr_setup):
    """With data.unlabelled the training split is labelled + unlabelled images: stage 1 trains on the labelled part
    (the unlabelled labels are -1 and must not reach its loss), then scores every image once for stage 2."""
    from reprodistill.data.sources import UNLABELLED

    _, train, make, _ = tdmr_setup
    ds = train.dataset
    hidden = ds.split.labels.copy()
    hidden[16:] = UNLABELLED
    mixed = FeatureSplit(_Dataset(ds.images, torch.from_numpy(hidden)), n_labelled=16)
    method = make()
    assert method.uses_unlabelled
    method.prepare(mixed, torch.device("cpu"), val=FeatureSplit(_Dataset(ds.images[:8], torch.arange(8) % 2)))
    assert method.proxy_train.shape[0] == 24 and method.logits_train.shape[0] == 24
    with torch.no_grad():  # the unlabelled images' targets are the frozen reprogrammed FM's outputs on them
        _, expected = method.reprogrammed(method.reprogrammed.fm_features(ds.images[16:]))
    torch.testing.assert_close(method.logits_train[16:], expected, atol=1e-4, rtol=1e-4)
    # 16 labelled images in batches of 8: 2 joint steps per epoch; the curve has the warm-up point and each epoch
    assert method.reprogrammed.steps == 4
    curve = method.reprogrammed.curve
    assert [c["epoch"] for c in curve] == [0, 1, 2] and [c["steps"] for c in curve] == [0, 2, 4]
    assert all(0 <= c["val_accuracy"] <= 1 and 0 <= c["val_auc"] <= 1 and c["val_loss"] > 0 for c in curve)
    batch = {"image": ds.images[12:20], "label": torch.from_numpy(hidden[12:20]), "index": torch.arange(12, 20)}
    method.train()
    method.progress = 0.5
    out = method(batch)
    assert torch.isfinite(out.loss) and out.parts["kd"] > 0  # KD reads the unlabelled rows' targets too


def test_a_tdmr_run_writes_stage1s_validation_curve_with_the_auc_the_bench_ranks_on(tiny_teacher, small_npz, tmp_path):
    """Stage 1's curve reaches the method folder (``prepare_curve.csv``): one row after the head warm-up and each
    joint epoch; stage 1 keeps the state of its best row on validation (AUC, then loss; the warm-up's included),
    marked ``kept``, and that row is the frozen reprogrammed FM's validation loss, accuracy and AUC, recomputed here."""
    import csv

    from reprodistill.config import load_config
    from reprodistill.data.dataset import ImageDataset
    from reprodistill.data.sources import load_data
    from reprodistill.engine.run import run
    from reprodistill.methods import METHODS
    from reprodistill.models import create_teacher
    from reprodistill.util.metrics import classification_metrics

    tiny_teacher(32)  # writes tmp_path/fm.pt
    cfg = load_config("default", [
        f"data.source={small_npz}", "methods=[tdmr]", f"teacher.name={tmp_path / 'fm.pt'}", "teacher.arch=resnet10t",
        "teacher.image_size=32", "student.name=resnet10t", "train.epochs=1", "train.steps=null",
        "train.batch_size=16", f"teacher.cache_dir={tmp_path / 'cache'}", "method_options.tdmr.stage1_epochs=2",
        "method_options.tdmr.stage1_head_epochs=2", "method_options.tdmr.stage1_batch_size=32",
    ])  # fmt: skip
    run(cfg, run_dir=tmp_path / "run")
    rows = list(csv.DictReader(open(tmp_path / "run" / "tdmr" / "prepare_curve.csv")))
    # 60 labelled images in batches of 32: 2 joint steps per epoch
    assert [(int(r["epoch"]), int(r["steps"])) for r in rows] == [(0, 0), (1, 2), (2, 4)]
    assert all(0 <= float(r["val_auc"]) <= 1 and 0 <= float(r["val_accuracy"]) <= 1 for r in rows)
    kept = [r for r in rows if float(r["kept"]) == 1.0]
    assert len(kept) == 1 and float(kept[0]["val_auc"]) == max(float(r["val_auc"]) for r in rows)
    # the kept row is the reprogrammed FM as stage 2 used it: rebuild it from the stored stage 1 and score val again
    student = create_student(StudentConfig(name="resnet10t"), 2, (28, 28))
    ctx = MethodContext(cfg=cfg, num_classes=2, student=student, teacher=create_teacher(cfg.teacher),
                        class_weights=None)  # fmt: skip
    method = METHODS.get("tdmr")(ctx, METHODS.get("tdmr").parse_options(cfg.method_options["tdmr"]))
    state = torch.load(next((tmp_path / "cache").glob("tdmr-stage1-*.pt")), weights_only=True)
    for m, sd in zip(method.reprogrammed.parts(), state["modules"]):
        m.load_state_dict(sd)
    method.reprogrammed.eval()
    data = load_data(cfg.data)
    val = ImageDataset(data.val, data.channels, data.load_size)
    images = torch.stack([val[i]["image"] for i in range(len(val))])
    with torch.no_grad():
        logits = method.reprogrammed(method.reprogrammed.fm_features(images))[1]
    expected = classification_metrics(logits.log_softmax(1).numpy(), data.val.labels)
    assert float(kept[0]["val_auc"]) == pytest.approx(expected["auc"], abs=1e-6)
    assert float(kept[0]["val_accuracy"]) == pytest.approx(expected["accuracy"], abs=1e-6)
