"""TDMR: schedule values, stage 1 trains the prompt through the frozen FM, stage 2 wiring, ablation switches."""

import pytest
import torch
from conftest import build_method

from reprodistill.config import RunConfig, StudentConfig
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
    def __init__(self, images, labels):
        self.images, self.split = images, type("S", (), {"labels": labels.numpy()})()

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
    train = type("Split", (), {"dataset": _Dataset(images, labels)})()

    def make(**opts):
        torch.manual_seed(0)
        student = create_student(StudentConfig(name="resnet10t"), num_classes=2, default_size=(28, 28))
        ctx = MethodContext(cfg=RunConfig(methods=["tdmr"]), num_classes=2, student=student, teacher=teacher)
        return build_method("tdmr", ctx, **{"stage1_epochs": 2, "stage1_batch_size": 8, "pad": 4, **opts})

    batch = {"image": images[:8], "label": labels[:8], "index": torch.arange(8)}
    return teacher, train, make, batch


def test_stage1_trains_prompt_projection_and_classifier_never_the_fm(tdmr_setup):
    teacher, train, make, _ = tdmr_setup
    fm_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    method = make()
    head_before = method.fm_classifier.weight.clone()
    method.prepare(train, torch.device("cpu"))
    assert method.prompt.weight.abs().sum() > 0  # moved from its zero init: gradients reached the prompt
    assert (method.prompt.weight * (1 - method.prompt.mask)).abs().sum() == 0  # only the frame
    assert not torch.equal(method.fm_classifier.weight, head_before)
    assert all(torch.equal(v, fm_before[k]) for k, v in teacher.state_dict().items())
    assert method.proxy_train.shape == (24, 256) and method.logits_train.shape == (24, 2)
    assert not any(p.requires_grad for m in method.stage1_modules() for p in m.parameters())


def test_stage2_loss_follows_the_schedule_and_trains_the_student_side(tdmr_setup):
    _, train, make, batch = tdmr_setup
    method = make(prompt="none")
    method.prepare(train, torch.device("cpu"))
    method.train()
    method.progress = 0.0
    out = method(batch)
    assert out["loss"].item() == pytest.approx(out["parts"]["feat"].item(), rel=1e-5)  # features only at the start
    out["loss"].backward()
    assert method.student_projector.weight.grad.abs().sum() > 0
    assert method.student.model.conv1[0].weight.grad.abs().sum() > 0
    method.progress = 1.0
    out = method(batch)
    p = out["parts"]
    assert out["loss"].item() == pytest.approx(p["kd"].item() + p["ce"].item(), rel=1e-5)
    assert p["w_T"].item() == pytest.approx(1.0)
    # the reprogrammed FM is reported beside the student
    assert method.extra_logits(batch)["reprogrammed_fm"].shape == (8, 2)


def test_ablation_switches(tdmr_setup):
    _, train, make, _ = tdmr_setup
    no_proxy = make(proxy="none", prompt="none", stage1_epochs=1)
    no_proxy.prepare(train, torch.device("cpu"))
    assert no_proxy.proxy_train.shape[1] == no_proxy.teacher.feature_dim  # the proxy space is the FM's own
    assert no_proxy.prompt is None


def test_tdmr_with_a_transformer_fm_from_a_local_checkpoint(tmp_path, tdmr_setup):
    import timm

    from reprodistill.config import TeacherConfig
    from reprodistill.models import create_teacher

    _, train, _, batch = tdmr_setup
    torch.manual_seed(0)
    torch.save(timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=0).state_dict(), tmp_path / "vit.pt")
    vit = create_teacher(TeacherConfig(name=str(tmp_path / "vit.pt"), arch="vit_tiny_patch16_224", image_size=32))
    student = create_student(StudentConfig(name="resnet10t"), num_classes=2, default_size=(28, 28))
    ctx = MethodContext(cfg=RunConfig(methods=["tdmr"]), num_classes=2, student=student, teacher=vit)
    method = build_method("tdmr", ctx, stage1_epochs=1, stage1_batch_size=8, pad=4)
    method.prepare(train, torch.device("cpu"))
    assert method.prompt.weight.abs().sum() > 0
    method.train()
    method(batch)["loss"].backward()
    assert method.student_projector.weight.grad is not None
