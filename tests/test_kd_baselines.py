"""KD baselines from the linearly probed FM: the probe, the wiring of each method, FitNet/AT stage choice."""

import pytest
import torch
from conftest import build_method

from reprodistill.config import RunConfig, StudentConfig
from reprodistill.features.split import FeatureSplit
from reprodistill.methods import MethodContext
from reprodistill.models import create_student
from reprodistill.reprogram.probe import fit_linear_probe

KD_METHODS = ["kd", "dkd", "rkd", "cka_kd", "fitnet", "at"]
# DKD's ramp starts at 0, so it is switched off to see its parts at step 0


def test_linear_probe_fit_is_deterministic_and_separates_separable_data():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (300,), generator=g)
    centres = torch.randn(3, 20, generator=g) * 4
    x = centres[y] + torch.randn(300, 20, generator=g) + 100.0  # a large offset: standardisation must handle it
    a, b = fit_linear_probe(x, y, 3), fit_linear_probe(x, y, 3)
    assert torch.equal(a.linear.weight, b.linear.weight)
    assert (a(x).argmax(1) == y).float().mean() > 0.98
    assert not any(p.requires_grad for p in a.parameters())


class _Split:
    """What ``prepare`` reads from an engine split: the dataset's labels and cached features."""

    def __init__(self, labels, feats):
        self.dataset = type("D", (), {"split": type("S", (), {"labels": labels.numpy()})()})()
        self.teacher_features = feats
        self.online_teacher = None


RAMP_OFF = {"dkd": {"warmup": 0.0}}


@pytest.fixture()
def kd_setup(tiny_teacher):
    teacher = tiny_teacher(64)  # resnet10t at 64 px: a 512 x 2 x 2 map

    def make(name, **opts):
        torch.manual_seed(0)
        student = create_student(StudentConfig(name="resnet10t"), num_classes=3, default_size=(28, 28))
        ctx = MethodContext(cfg=RunConfig(methods=[name]), num_classes=3, student=student, teacher=teacher)
        method = build_method(name, ctx, **opts)
        images = torch.randint(0, 256, (12, 1, 28, 28), dtype=torch.uint8)
        kind = type(method).teacher_features
        feats = teacher.features(images) if kind == "pooled" else teacher.feature_maps(images)
        labels = torch.arange(12) % 3
        method.prepare(_Split(labels, feats), torch.device("cpu"))
        return method, {"image": images, "label": labels, "teacher_features": feats}

    return teacher, make


@pytest.mark.parametrize("name", KD_METHODS)
def test_kd_method_wiring(kd_setup, name):
    teacher, make = kd_setup
    method, batch = make(name, **RAMP_OFF.get(name, {}))
    method.train()
    assert not method.probe.training  # the probed FM stays frozen in train mode
    out = method(batch)
    parts = out.parts
    assert "ce" in parts and len(parts) >= 2
    # the distillation weight reaches the loss: doubling it adds the distillation part(s) once more
    doubled, _ = make(
        name, **{w: 2 * getattr(method.options, w) for w in type(method).loss_weights}, **RAMP_OFF.get(name, {})
    )
    doubled.train()
    assert set(out.weights) == set(parts) - {"ce"}  # parts are unweighted; each distillation term has its weight
    distill = sum(out.weights[k] * v.item() for k, v in parts.items() if k != "ce")
    assert distill > 0
    assert doubled(batch).loss.item() == pytest.approx(out.loss.item() + distill, rel=1e-4)
    out.loss.backward()
    assert method.student.model.conv1[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in method.probe.parameters())
    assert not any(p.requires_grad for p in teacher.parameters())
    assert not any(k.startswith("teacher") for k in method.state_dict())
    # the probed FM's logits are what the KD terms compare against, and they are reported as a branch
    pooled = (
        batch["teacher_features"] if batch["teacher_features"].ndim == 2 else teacher.pool(batch["teacher_features"])
    )
    assert torch.allclose(method.extra_logits(batch)["probed_fm"], method.probe(pooled))


def test_distillation_terms_pull_toward_the_teacher(kd_setup):
    """With CE off (weightless labels aside), a few KD steps make the student's predictions closer to the probe's."""
    _, make = kd_setup
    method, batch = make("kd", weight=1.0, temperature=1.0)
    teacher_p = method.extra_logits(batch)["probed_fm"].softmax(-1)
    opt = torch.optim.Adam(method.student.parameters(), lr=1e-3)

    def gap():
        method.eval()
        with torch.no_grad():
            return (method.predict(batch).softmax(-1) - teacher_p).abs().mean().item()

    before = gap()
    for _ in range(30):
        method.train()
        loss = method.distill_loss(method.student_outputs(batch), batch)["kd"][1]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert gap() < 0.5 * before


def test_map_methods_guide_the_deepest_stage_that_keeps_the_fm_resolution(kd_setup):
    _, make = kd_setup
    fitnet, batch = make("fitnet")
    # resnet10t student at 28 px: stage outputs 7x7, 4x4, 2x2, 1x1; the FM map is 2x2 -> stage 2
    assert fitnet.stage == 2 and fitnet.student_map_shape[1:] == (2, 2)
    assert fitnet.regressor(fitnet.student_outputs(batch)["map"]).shape[1] == batch["teacher_features"].shape[1]
    # FitNet standardises the FM map with train statistics
    t = batch["teacher_features"]
    assert torch.allclose(fitnet.map_mean.flatten(), t.mean(dim=(0, 2, 3)), atol=1e-4)
    at, _ = make("at", stage=0)
    assert at.stage == 0
    with pytest.raises(Exception, match="stages 0..3"):
        make("at", stage=7)


def test_dkd_ramps_its_weight_in(kd_setup):
    _, make = kd_setup
    method, batch = make("dkd", warmup=0.5)
    method.progress = 0.0
    assert method(batch).weights["tckd"] == 0.0
    method.progress = 0.25
    half = method(batch).weights["tckd"]
    method.progress = 0.9
    full = method(batch).weights["tckd"]
    assert full == method.options.alpha and half == pytest.approx(full / 2)


def test_prepare_uses_online_features_when_nothing_is_cached(kd_setup):
    teacher, make = kd_setup
    method, batch = make("kd")

    class Dataset:
        split = type("S", (), {"labels": batch["label"].numpy()})()

        def __len__(self):
            return len(batch["label"])

        def __getitem__(self, i):
            return {"image": batch["image"][i]}

    online = FeatureSplit(Dataset(), None, teacher.features)
    fresh, _ = make("kd")
    fresh.prepare(online, torch.device("cpu"))
    assert torch.allclose(fresh.probe.linear.weight, method.probe.linear.weight, atol=1e-4)


def test_probe_l2_is_chosen_on_validation_not_train():
    g = torch.Generator().manual_seed(1)
    # 40 training points in 200 dims with noisy labels: unregularised fits overfit, validation prefers a larger L2
    w = torch.randn(200, generator=g)
    x, xv = torch.randn(40, 200, generator=g), torch.randn(400, 200, generator=g)
    y = ((x @ w + 8 * torch.randn(40, generator=g)) > 0).long()
    yv = ((xv @ w) > 0).long()
    chosen = fit_linear_probe(x, y, 2, l2=(1e-4, 1.0), val=(xv, yv))
    weakest = fit_linear_probe(x, y, 2, l2=1e-4)
    strongest = fit_linear_probe(x, y, 2, l2=1.0)
    ce = {k: torch.nn.functional.cross_entropy(p(xv), yv).item() for k, p in (("weak", weakest), ("strong", strongest))}
    best = strongest if ce["strong"] < ce["weak"] else weakest
    assert torch.equal(chosen.linear.weight, best.linear.weight)


def test_linear_probe_baseline_is_solved_not_trained(tiny_teacher):
    teacher = tiny_teacher(64)
    ctx = MethodContext(cfg=RunConfig(methods=["linear_probe"]), num_classes=3, teacher=teacher)
    method = build_method("linear_probe", ctx)
    assert type(method).loop_training is False
    images = torch.randint(0, 256, (30, 1, 28, 28), dtype=torch.uint8)
    feats, labels = teacher.features(images) * 30 + 5, torch.arange(30) % 3
    method.prepare(_Split(labels, feats), torch.device("cpu"))
    expected = fit_linear_probe(feats, labels, 3)
    batch = {"teacher_features": feats, "label": labels, "image": images}
    with torch.no_grad():
        assert torch.allclose(method.eval()(batch).logits, expected(feats), atol=1e-5)
        assert torch.allclose(method.train()(batch).logits, expected(feats), atol=1e-5)  # no mode-dependent norm
