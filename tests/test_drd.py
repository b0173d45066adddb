"""DRD: stage-wise student access, projector shapes, hybrid passes, the alpha/beta decay and gradient routing."""

import pytest
import torch
from conftest import build_method

from reprodistill.config import RunConfig, StudentConfig
from reprodistill.errors import ConfigError
from reprodistill.methods import MethodContext
from reprodistill.models import create_student
from reprodistill.models.stages import staged


@pytest.mark.parametrize("name", ["resnet18", "mobilenetv3_small_100", "efficientnet_lite0"])
def test_staged_student_reproduces_features(name):
    st = create_student(StudentConfig(name=name), 2, (28, 28)).eval()
    x = torch.rand(2, 3, 28, 28)
    f, inputs = staged(st).forward_with_stage_inputs(x)
    assert torch.allclose(f, st.features(x), atol=1e-5)
    assert torch.allclose(staged(st).run_from(inputs[2], 2), f, atol=1e-5)  # resuming mid-network is exact


@pytest.fixture()
def drd_ctx(tiny_teacher):
    teacher = tiny_teacher(64)
    student = create_student(StudentConfig(name="resnet18"), num_classes=2, default_size=(28, 28))
    ctx = MethodContext(cfg=RunConfig(methods=["drd"]), num_classes=2, student=student, teacher=teacher)
    images = torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8)
    batch = {
        "image": images,
        "label": torch.tensor([0, 1, 0, 1, 0, 1]),
        "teacher_features": teacher.feature_maps(images),
    }
    return ctx, batch


def _drd(ctx, **opts):
    return build_method("drd", ctx, **opts)


def test_projectors_match_stage_inputs_and_gradients_route(drd_ctx):
    ctx, batch = drd_ctx
    method = _drd(ctx)
    assert batch["teacher_features"].shape == (6, 512, 2, 2)
    shapes = [(64, 7, 7), (64, 7, 7), (128, 4, 4), (256, 2, 2)]
    assert [tuple(p(batch["teacher_features"]).shape[1:]) for p in method.projectors] == shapes
    method(batch).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.projectors.parameters() if p.ndim > 1)
    assert method.student.model.layer4[0].downsample[0].weight.grad.abs().sum() > 0  # (bn2 gammas start at 0)
    assert method.student.model.conv1.weight.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in ctx.teacher.parameters())
    assert not any(k.startswith("teacher") for k in method.state_dict())


def test_alpha_beta_decay_linearly(drd_ctx):
    ctx, batch = drd_ctx
    method = _drd(ctx, decay_to=0.2, hybrid_weight=2.0, kd_weight=3.0, cka_weight=0.5, stages=[1, 3])
    assert len(method.projectors) == 2
    method.eval()
    for progress, decay in ((0.0, 1.0), (0.5, 0.6), (1.0, 0.2)):
        method.progress = progress
        out = method(batch)
        p = out.parts
        assert out.weights["hybrid"] == pytest.approx(2.0 * decay) and out.weights["kd"] == pytest.approx(3.0 * decay)
        expected = p["ce"] + 2.0 * decay * p["hybrid"] + 3.0 * decay * p["kd"] + 0.5 * p["cka"]
        assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_bad_stage_and_unsupported_student(drd_ctx):
    ctx, _ = drd_ctx
    with pytest.raises(ConfigError, match="stages 0..3"):
        _drd(ctx, stages=[4])
    vit = create_student(StudentConfig(name="vit_tiny_patch16_224", image_size=32), 2, (32, 32))
    ctx.student = vit
    with pytest.raises(ConfigError, match="stage-wise methods support"):
        _drd(ctx)


def test_hybrid_passes_leave_student_bn_statistics_alone(drd_ctx):
    ctx, batch = drd_ctx
    method = _drd(ctx, hybrid_bn_stats="frozen").train()
    bn = method.student.model.layer4[1].bn2
    before = bn.running_mean.clone()
    with torch.no_grad():
        method.student(method.student_input(batch))  # what one student forward alone does to the statistics
        expected = bn.running_mean.clone()
        bn.running_mean.copy_(before)
        method(batch)  # student forward + 4 hybrid passes
    assert not torch.allclose(expected, before)  # the student's own forward does move them
    assert torch.allclose(bn.running_mean, expected, atol=1e-6)  # the hybrid passes add nothing
    assert bn.momentum == 0.1  # restored after the hybrid passes


def test_default_keeps_student_bn_statistics_to_its_own_inputs(drd_ctx):
    ctx, batch = drd_ctx
    method = _drd(ctx).train()  # the default must be the safe one: the deployed student's statistics
    bn = method.student.model.layer3[0].bn1
    before = bn.running_var.clone()
    with torch.no_grad():
        method.student(method.student_input(batch))
        expected = bn.running_var.clone()
        bn.running_var.copy_(before)
        method(batch)
    assert torch.allclose(bn.running_var, expected, atol=1e-6)


def test_output_target_projects_onto_stage_outputs_and_skips_hybrids_at_zero_weight(drd_ctx):
    ctx, batch = drd_ctx
    method = _drd(ctx, stage_target="output")
    shapes = [(64, 7, 7), (128, 4, 4), (256, 2, 2), (512, 1, 1)]
    assert [tuple(p(batch["teacher_features"]).shape[1:]) for p in method.projectors] == shapes
    out = method(batch)
    assert out.parts["hybrid"] > 0 and torch.isfinite(out.loss)
    method.progress = 1.0  # decay_to 0: alpha = beta = 0
    calls = []
    hook = method.student.model.layer4.register_forward_hook(lambda *a: calls.append(1))
    out = method(batch)
    hook.remove()
    assert len(calls) == 1  # the student's own pass only, no hybrid pass through layer4
    assert out.parts["hybrid"] == 0 and out.parts["kd"] == 0
