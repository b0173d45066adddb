"""The method contract, checked for every registered method (a new method file is covered here without a new test):
one training step on a tiny FM and student gives a finite loss and a typed step output, gradients never reach the
frozen FM, the FM is not in the method's state dict, and each loss weight (``Method.loss_weights``) reaches the loss.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import build_method

from reprodistill.config import RunConfig, StudentConfig
from reprodistill.data.dataset import ImageDataset
from reprodistill.data.sources import UNLABELLED, Split
from reprodistill.features.fm_pass import FMPass
from reprodistill.features.split import FeatureSplit
from reprodistill.methods import METHODS, MethodContext, StepOutput
from reprodistill.models import create_student

# options that keep a method's preparation small here (the defaults are sized for real data)
FAST_OPTIONS = {
    "tdmr": {"stage1_head_epochs": 1, "stage1_epochs": 1, "stage1_max_steps": 2, "proxy_dim": 8},
    # a random network is never 95% sure: let every pseudo-label count
    "fixmatch": {"threshold": 0.0},
    "kd": {"consistency_threshold": 0.0},
    "rd": {"consistency_threshold": 0.0},
}
# methods whose FM must be a Vision Transformer
VIT_METHODS = {"vpt"}
N, K = 12, 3


def _split(seed: int) -> ImageDataset:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (N, 28, 28, 1), dtype=np.uint8)
    return ImageDataset(Split(labels=np.arange(N) % K, images=images), 1, (28, 28))


def _build(name: str, teacher, **weights):
    """Method ``name`` with its train / val splits prepared as the engine would, and one training batch."""
    cls = METHODS.get(name)
    torch.manual_seed(0)
    student = create_student(StudentConfig(name="resnet10t"), K, (28, 28)) if cls.uses_student else None
    ctx = MethodContext(
        cfg=RunConfig(methods=[name]),
        num_classes=K,
        student=student,
        teacher=teacher if cls.uses_teacher else None,
        class_weights=torch.tensor([1.0, 2.0, 0.5]),
    )
    method = build_method(name, ctx, **FAST_OPTIONS.get(name, {}), **weights)
    fm = FMPass(teacher, torch.device("cpu"), batch_size=8)
    splits = {}
    for s, ds in {"train": _split(0), "val": _split(1)}.items():
        feats = fm.features(ds, cls.teacher_features) if cls.teacher_features else None
        splits[s] = FeatureSplit(ds, feats)
    method.prepare(splits["train"], torch.device("cpu"), val=splits["val"])
    train = splits["train"]
    batch = {
        "image": torch.stack([train.dataset[i]["image"] for i in range(N)]),
        "label": torch.as_tensor(train.dataset.split.labels),
        "index": torch.arange(N),
    }
    if cls.uses_unlabelled:  # the last images of the batch are unlabelled, as data.unlabelled mixes them in
        batch["label"][-4:] = UNLABELLED
    for view_name, view in method.input_views.items():  # the extra views the loop adds
        batch[f"image_{view_name}"] = view(batch["image"], torch.Generator().manual_seed(2))
    if train.teacher_features is not None:
        batch["teacher_features"] = train.teacher_features[batch["index"]].float()  # as the loop reads them
    return method, batch


def _step(method, batch) -> StepOutput:
    method.train()
    method.progress = 0.5  # mid-training: every scheduled weight is switched on
    torch.manual_seed(1)  # the same dropout masks in every call
    return method(batch)


@pytest.mark.parametrize("name", METHODS.names())
def test_one_step_keeps_the_method_contract(teachers, name):
    teacher = teachers["vit" if name in VIT_METHODS else "cnn"]
    method, batch = _build(name, teacher)
    for p in teacher.parameters():
        p.grad = None
    out = _step(method, batch)
    assert isinstance(out, StepOutput)
    assert out.logits.shape == (N, K) and out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert out.parts and all(torch.isfinite(v).all() for v in out.parts.values())
    assert set(out.weights) <= set(out.parts), "every weight names a logged part"
    assert all(isinstance(v, float) for v in out.log_values().values())
    out.loss.backward()
    trained = [p for p in method.parameters() if p.requires_grad]
    assert trained and any(p.grad is not None and p.grad.abs().sum() > 0 for p in trained)
    # the frozen FM: never trained, never checkpointed
    assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    fm_names = {n.split(".", 1)[-1] for n, _ in teacher.named_parameters()}
    state = method.state_dict()
    assert not any(k.startswith("teacher.") for k in state)
    leaked = [k for k in state if not k.startswith("student.") and k.split(".", 1)[-1] in fm_names]
    assert not leaked, f"frozen FM weights in the state dict: {leaked[:3]}"
    assert method.predict(batch).shape == (N, K)


@pytest.mark.parametrize("name", METHODS.names())
def test_each_loss_weight_reaches_the_loss(teachers, name):
    cls = METHODS.get(name)
    options = [f.name for f in dataclasses.fields(cls.Options)]
    assert set(cls.loss_weights) <= set(options)
    assert {o for o in options if o.endswith("weight")} <= set(cls.loss_weights), "declare it in loss_weights"
    names = cls.loss_weights
    if not names:
        pytest.skip(f"{name} has no loss weights")
    teacher = teachers["vit" if name in VIT_METHODS else "cnn"]
    base_out = _step(*_build(name, teacher))
    defaults = cls.Options()
    for w in names:
        value = getattr(defaults, w)
        changed = _step(*_build(name, teacher, **{w: 2 * value if value else 1.0}))
        assert changed.loss.item() != pytest.approx(base_out.loss.item(), rel=1e-6), f"{name}: {w} has no effect"


def test_a_new_method_is_one_class_it_trains_and_the_verdict_counts_its_family(teachers):
    """A toy method registered here (one class: its name, family and forward) passes the contract step, and bench
    rows read from cell folders as trained by it land on reprodistill's side of the verdict; no other file names
    it."""
    from pathlib import Path

    from reprodistill.bench.rows import read_row
    from reprodistill.bench.verdict import verdict_markdown
    from reprodistill.methods import Method, check_config, register_method

    @register_method("toy_transfer")
    class ToyTransfer(Method):
        family = "transfer"

        def forward(self, batch):
            z = self.student(self.student_input(batch))
            return StepOutput.weighted(z, {"ce": self.task_loss(z, batch["label"])}, {})

    try:
        check_config(RunConfig(methods=["toy_transfer", "student"]))
        method, batch = _build("toy_transfer", teachers["cnn"])
        out = _step(method, batch)
        out.loss.backward()
        assert torch.isfinite(out.loss) and method.student.head.weight.grad.abs().sum() > 0
        golden = Path(__file__).parent / "data" / "golden_bench" / "cells"
        cells = (("toy", "toy_transfer", "rd/frac0.1-seed{}/rd"),
                 ("fixmatch-unl", "fixmatch", "fixmatch-unl/frac0.1-seed{}/fixmatch"))  # fmt: skip
        rows = [read_row(name, 0.1, s, base, golden / where.format(s)) for s in range(3) for name, base, where in cells]
        assert {r.family for r in rows if r.method == "toy"} == {"transfer"}
        assert "reprodistill's best `toy`" in verdict_markdown(rows, ["fixmatch-unl", "toy"])
    finally:
        METHODS.unregister("toy_transfer")
