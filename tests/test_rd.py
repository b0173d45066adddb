"""RD wiring: the shared classifier, where gradients go (phi, g, student; never the FM), and the loss sum."""

import pytest
import torch
from conftest import build_method

from reprodistill.config import RunConfig, StudentConfig
from reprodistill.methods import MethodContext
from reprodistill.models import create_student


@pytest.fixture()
def rd_setup(tiny_teacher):
    teacher = tiny_teacher(32)
    student = create_student(StudentConfig(name="resnet10t"), num_classes=3, default_size=(28, 28))
    cfg = RunConfig(methods=["rd"])
    ctx = MethodContext(cfg=cfg, num_classes=3, student=student, teacher=teacher)
    images = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    batch = {
        "image": images,
        "label": torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]),
        "teacher_features": teacher.features(images),
    }
    return ctx, batch


def _rd(ctx, **opts):
    return build_method("rd", ctx, **opts)


def test_gradients_reach_phi_head_and_student_never_the_fm(rd_setup):
    ctx, batch = rd_setup
    method = _rd(ctx)
    fm_before = {k: v.clone() for k, v in ctx.teacher.state_dict().items()}
    out = method(batch)
    out.loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.phi.parameters())
    assert method.student.head.weight.grad.abs().sum() > 0
    assert method.student.model.conv1[0].weight.grad.abs().sum() > 0
    assert not any(p.requires_grad or p.grad is not None for p in ctx.teacher.parameters())
    assert "teacher" not in dict(method.named_modules()) and not any(
        k.startswith("teacher") for k in method.state_dict()
    )
    torch.optim.SGD([p for p in method.parameters()], lr=0.1).step()
    assert all(torch.equal(v, fm_before[k]) for k, v in ctx.teacher.state_dict().items())


def test_one_classifier_scores_both_branches(rd_setup):
    ctx, batch = rd_setup
    method = _rd(ctx).eval()
    with torch.no_grad():
        out = method(batch)
        f_s = method.student.features(method.student_input(batch))
        r_t = method.phi(batch["teacher_features"])
        g = method.student.head
        assert torch.allclose(out.logits, g(f_s), atol=1e-6)
        assert torch.allclose(out.aux["teacher_logits"], g(r_t), atol=1e-6)
        assert torch.allclose(method.predict(batch), out.logits, atol=1e-6)  # deployment = student with g


def test_loss_is_the_weighted_sum_of_its_parts(rd_setup):
    ctx, batch = rd_setup
    w = dict(teacher_ce_weight=0.5, student_ce_weight=2.0, kd_weight=0.3, cka_weight=4.0)
    out = _rd(ctx, **w)(batch)
    p = out.parts
    expected = 0.5 * p["ce_teacher"] + 2.0 * p["ce_student"] + 0.3 * p["kd"] + 4.0 * p["cka"]
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert 0.0 <= p["cka"].item() <= 1.0 and p["kd"].item() >= 0.0


def test_detach_option_controls_kd_gradient_into_phi(rd_setup):
    ctx, batch = rd_setup
    grads = {}
    for detach in (True, False):
        torch.manual_seed(0)
        method = _rd(ctx, teacher_ce_weight=0.0, student_ce_weight=0.0, cka_weight=0.0, detach_teacher_logits=detach)
        method(batch).loss.backward()
        grads[detach] = sum(float(p.grad.abs().sum()) for p in method.phi.parameters() if p.grad is not None)
    assert grads[True] == 0.0 and grads[False] > 0.0


def test_phi_standardises_with_the_train_statistics_in_train_and_eval_mode(rd_setup):
    ctx, batch = rd_setup
    method = _rd(ctx, phi_input_dropout=0.0)  # dropout differs between the modes by design; the norm must not

    class Split:
        teacher_features = batch["teacher_features"] * 50.0 + 7.0  # raw FM scale: far from mean 0 / var 1
        online_teacher = None
        dataset = type("D", (), {"split": type("S", (), {"labels": batch["label"].numpy()})()})()

    method.prepare(Split, torch.device("cpu"))
    f = Split.teacher_features
    assert torch.allclose(method.phi.norm(f).mean(0), torch.zeros(f.shape[1]), atol=1e-4)
    with torch.no_grad():
        train_out = method.train().phi(f)
        eval_out = method.eval().phi(f)
    # a BatchNorm here gave eval-mode outputs from running statistics that had seen a few updates only
    assert torch.allclose(train_out, eval_out, atol=1e-6)


def test_kd_target_probe_distils_the_solved_probe_not_the_branch(teachers):
    """kd_target=probe: the KD term is KL to the FM's linear probe (solved in prepare, frozen), phi and its CE and
    CKA still train; the default distils the reprogrammed branch."""
    from test_method_contract import _build, _step

    from reprodistill.losses import kd_loss

    method, batch = _build("rd", teachers["cnn"], kd_target="probe")
    assert not any(p.requires_grad for p in method.probe.parameters())
    assert method.probe.linear.weight.abs().sum() > 0  # solved in prepare
    out = _step(method, batch)
    f_t = batch["teacher_features"]
    with torch.no_grad():
        expected = kd_loss(out.logits, method.probe(f_t), method.options.temperature)
    assert out.parts["kd"].item() == pytest.approx(expected.item(), rel=1e-5)
    out.loss.backward()
    assert method.phi.blocks[0].body[0].weight.grad.abs().sum() > 0  # the branch still trains (its CE, CKA)
    branch, batch = _build("rd", teachers["cnn"])
    z_t = _step(branch, batch).aux["teacher_logits"]
    assert not hasattr(branch, "probe") and not torch.allclose(z_t, method.probe(f_t))


def test_validation_calibration_softens_the_branch_kd_target(rd_setup):
    """teacher_calibration=val: before each round the KD target is the branch's logits times the 1/T that fits the
    validation split; the deployed student and the branch's own CE are untouched."""
    from reprodistill.losses import fit_logit_scale, kd_loss

    ctx, batch = rd_setup

    class _Split:
        def __init__(self, labels, feats):
            self.dataset = type("D", (), {"split": type("S", (), {"labels": labels.numpy()})()})()
            self.teacher_features, self.online_teacher = feats, None

    train = _Split(batch["label"], batch["teacher_features"])
    val_labels = torch.tensor([2, 1, 0, 2, 1, 0, 1, 2])
    val = _Split(val_labels, batch["teacher_features"])
    torch.manual_seed(0)
    method = _rd(ctx, teacher_calibration="val")
    method.prepare(train, torch.device("cpu"), val=val)
    with torch.no_grad():
        method.student.head.weight.mul_(50)  # an overconfident branch, as RD's CE makes it
    method.on_epoch_start(0)
    with torch.no_grad():
        z_val = method.student.head(method.phi.eval()(batch["teacher_features"]))
    method.train()
    scale = fit_logit_scale(z_val, val_labels)
    assert float(method.kd_target_scale) == pytest.approx(scale) and scale < 0.5
    out = method(batch)
    assert out.parts["kd"].item() == pytest.approx(
        kd_loss(out.logits, out.aux["teacher_logits"] * scale, 4.0).item(), rel=1e-5
    )
    assert out.logged["teacher_T"] == pytest.approx(1 / scale)
    assert "kd_target_scale" not in method.state_dict()  # recomputed from the weights, so resume-safe
    with pytest.raises(ValueError, match="validation split"):
        _rd(ctx, teacher_calibration="val").prepare(train, torch.device("cpu"))


def _rd_on_eight_images(teachers, **options):
    """(an `rd` on the cnn teacher prepared on 8 random images, a batch of them with the last 4 unlabelled and their
    strong views, the training dataset, its FM features)."""
    import numpy as np

    from reprodistill.data.dataset import ImageDataset
    from reprodistill.data.sources import UNLABELLED, Split
    from reprodistill.features.fm_pass import FMPass
    from reprodistill.features.split import FeatureSplit

    teacher = teachers["cnn"]
    images = np.random.default_rng(0).integers(0, 256, (8, 28, 28, 1), dtype=np.uint8)
    ds = ImageDataset(Split(labels=np.array([0, 1] * 4), images=images), 1, (28, 28))
    feats = FMPass(teacher, torch.device("cpu"), batch_size=8).features(ds, "pooled")
    torch.manual_seed(0)
    student = create_student(StudentConfig(name="resnet10t"), 2, (28, 28))
    ctx = MethodContext(cfg=RunConfig(methods=["rd"]), num_classes=2, student=student, teacher=teacher)
    m = build_method("rd", ctx, **options)
    m.prepare(FeatureSplit(ds, feats), torch.device("cpu"), val=FeatureSplit(ds, feats))
    labels = torch.tensor([0, 1, 0, 1, UNLABELLED, UNLABELLED, UNLABELLED, UNLABELLED])
    batch = {"image": torch.from_numpy(images).permute(0, 3, 1, 2), "label": labels, "index": torch.arange(8),
             "teacher_features": feats}  # fmt: skip
    batch["image_strong"] = m.input_views["strong"](batch["image"], torch.Generator().manual_seed(0))
    return m, batch, ds, feats


def test_kd_on_the_strong_view_of_unlabelled_images(teachers):
    """kd_student_view=strong: labelled rows distil from their weak view, unlabelled rows from their strong view, to
    the same targets as with the weak view; no FixMatch term unless consistency_weight > 0."""
    from reprodistill.losses import kd_loss

    m, batch, _, feats = _rd_on_eight_images(teachers, kd_student_view="strong", phi_input_dropout=0.0)
    assert set(m.input_views) == {"strong"} and m.consistency is None
    m.eval()  # deterministic BatchNorm: the same student outputs in the check below
    out = m(batch)
    with torch.no_grad():
        f = m.student.features(
            torch.cat([m.student_input(batch), m.student_input({"image": batch["image_strong"][4:]})])
        )
        z = m.student.head(f)
        z_t = m.student.head(m.phi(feats))
    expected = kd_loss(torch.cat([z[:4], z[8:]]), z_t, 4.0)
    assert out.parts["kd"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert "consistency" not in out.parts


def test_teacher_share_follows_the_branch_against_the_student_on_validation(teachers, monkeypatch):
    """teacher_share=val: after a validation round the teacher's share is 0.5 + (branch - student metric) / (2
    margin), clipped to [0, 1] (balanced accuracy where both AUCs saturate); the unlabelled rows' KD terms are
    weighted by it, the labelled ones not, FixMatch's term by 1 - share; the share is checkpointed."""
    from reprodistill.losses import kd_loss, kd_rows
    from reprodistill.util.metrics import classification_metrics

    options = {"consistency_weight": 2.0, "consistency_threshold": 0.0, "share_margin": 0.1, "phi_input_dropout": 0.0}
    m, batch, ds, feats = _rd_on_eight_images(teachers, teacher_share="val", **options)
    with pytest.raises(ValueError, match="consistency_weight > 0"):
        build_method("rd", m.ctx, teacher_share="val")
    assert float(m.teacher_share) == 1.0 and "teacher_share" in m.state_dict()
    with torch.no_grad():
        z_val = m.student.head(m.phi.eval()(feats))
    m.train()
    branch = classification_metrics(torch.log_softmax(z_val, -1).numpy(), ds.split.labels)
    m.after_validation({"auc": branch["auc"] - 0.04, "balanced_accuracy": 0.0})  # branch ahead by 0.04
    assert float(m.teacher_share) == pytest.approx(0.7)
    m.after_validation({"auc": branch["auc"] + 0.3, "balanced_accuracy": 0.0})
    assert float(m.teacher_share) == 0.0
    m.teacher_share.fill_(0.25)  # as a resumed run's checkpoint sets it; the loop then starts a round
    m.on_epoch_start(0)
    m.eval()  # deterministic BatchNorm
    out = m(batch)
    rows = kd_rows(out.logits, out.aux["teacher_logits"], 4.0)
    expected = (rows[:4].sum() + 0.25 * rows[4:].sum()) / 8
    assert out.parts["kd"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert out.weights["consistency"] == pytest.approx(2.0 * 0.75) and out.logged["teacher_share"] == 0.25
    assert rows.mean().item() == pytest.approx(kd_loss(out.logits, out.aux["teacher_logits"]).item(), rel=1e-5)
    # where both AUCs saturate, balanced accuracy decides
    monkeypatch.setattr("reprodistill.methods.rd.classification_metrics",
                        lambda *a: {"auc": 0.995, "balanced_accuracy": 0.90})  # fmt: skip
    m.after_validation({"auc": 0.999, "balanced_accuracy": 0.85})
    assert float(m.teacher_share) == pytest.approx(0.75)
    m.after_validation({"auc": 0.98, "balanced_accuracy": 0.85})  # the student has not saturated: AUC, 0.015 apart
    assert float(m.teacher_share) == pytest.approx(0.5 + 0.015 / 0.2)


def test_teacher_share_anneal_hands_the_unlabelled_images_from_the_teacher_to_fixmatch(teachers):
    """teacher_share=anneal: at training fraction p the unlabelled rows' KD terms weigh 1 - p (labelled rows 1) and
    FixMatch's term p * consistency_weight; p = 0 is plain KD; it needs FixMatch's term."""
    from reprodistill.losses import kd_loss, kd_rows

    m, batch, _, _ = _rd_on_eight_images(teachers, teacher_share="anneal", consistency_weight=2.0,
                                         consistency_threshold=0.0, phi_input_dropout=0.0)  # fmt: skip
    with pytest.raises(ValueError, match="teacher_share=anneal .* consistency_weight > 0"):
        build_method("rd", m.ctx, teacher_share="anneal")
    assert "teacher_share" not in m.state_dict()  # the share follows the loop's progress: nothing to checkpoint
    m.eval()  # deterministic BatchNorm
    m.progress = 0.0
    out = m(batch)
    assert out.parts["kd"].item() == pytest.approx(kd_loss(out.logits, out.aux["teacher_logits"]).item(), rel=1e-5)
    assert out.weights["consistency"] == 0.0 and out.logged["teacher_share"] == 1.0
    m.progress = 0.75
    out = m(batch)
    rows = kd_rows(out.logits, out.aux["teacher_logits"], 4.0)
    assert out.parts["kd"].item() == pytest.approx(((rows[:4].sum() + 0.25 * rows[4:].sum()) / 8).item(), rel=1e-5)
    assert out.weights["consistency"] == pytest.approx(1.5) and out.logged["teacher_share"] == pytest.approx(0.25)


def test_co_teacher_mixes_its_softened_prediction_on_the_students_view_into_the_kd_target(rd_setup):
    """KD target = (1 - w) softmax(z_t / T) + w softmax(z_co / T), z_co the frozen co-teacher on the student's
    view; the co-teacher is neither trained nor checkpointed, and the KD term teaches the student only."""
    from dataclasses import replace

    from reprodistill.losses import kd_loss

    ctx, batch = rd_setup
    co = create_student(StudentConfig(name="resnet10t"), num_classes=3, default_size=(28, 28)).eval()
    co.requires_grad_(False)
    method = _rd(replace(ctx, co_teachers=(co,)), co_teacher="somewhere", co_teacher_share=0.25, phi_input_dropout=0.0)
    method.eval()  # no dropout: the parts can be recomputed by hand
    with torch.no_grad():
        out = method(batch)
        z_t = out.aux["teacher_logits"]
        z_co = co(method.student_input(batch))  # same arch and spec: the student's view
        t = method.options.temperature
        mix = 0.75 * torch.softmax(z_t / t, -1) + 0.25 * torch.softmax(z_co / t, -1)
        assert torch.allclose(out.parts["kd"], kd_loss(out.logits, t * mix.log(), t), atol=1e-5)
        only_branch = kd_loss(out.logits, z_t, t)
        assert not torch.allclose(out.parts["kd"], only_branch, atol=1e-3)  # the co-teacher does change it
    assert method.state_dict().keys() == _rd(ctx).state_dict().keys()  # not checkpointed
    method.train()
    assert not co.training
    with pytest.raises(ValueError, match="co_teacher_share must be in"):
        _rd(replace(ctx, co_teachers=(co,)), co_teacher="x", co_teacher_share=1.5)
    with pytest.raises(ValueError, match="was not loaded"):
        _rd(ctx, co_teacher="x")
    # two co-teachers are one ensemble: each gets half of w
    co2 = create_student(StudentConfig(name="resnet10t"), num_classes=3, default_size=(28, 28)).eval()
    co2.requires_grad_(False)
    pair = _rd(replace(ctx, co_teachers=(co, co2)), co_teacher=["a", "b"], co_teacher_share=0.5,
               phi_input_dropout=0.0).eval()  # fmt: skip
    with torch.no_grad():
        out = pair(batch)
        x = pair.student_input(batch)
        mix = (0.5 * torch.softmax(out.aux["teacher_logits"] / t, -1) + 0.25 * torch.softmax(co(x) / t, -1)
               + 0.25 * torch.softmax(co2(x) / t, -1))  # fmt: skip
        assert torch.allclose(out.parts["kd"], kd_loss(out.logits, t * mix.log(), t), atol=1e-5)


def test_cells_written_with_co_teacher_weight_read_as_co_teacher_share():
    """co_teacher_weight was renamed (options named *_weight weigh loss terms); stored cell configs still parse."""
    from reprodistill.methods import METHODS

    options = METHODS.get("rd").parse_options({"co_teacher": ["a", "b"], "co_teacher_weight": 1.0})
    assert options.co_teacher_share == 1.0 and options.co_teacher == ["a", "b"]
