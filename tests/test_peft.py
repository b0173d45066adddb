"""PEFT baselines: visual prompt shapes/masks/gradients, label mapping by hand, LoRA wiring on CNN and ViT FMs."""

import pytest
import timm
import torch
from conftest import build_method

from reprodistill.config import RunConfig
from reprodistill.data.dataset import ImageDataset
from reprodistill.data.sources import Split
from reprodistill.data.transforms import InputSpec, normalize, to_unit
from reprodistill.features.split import FeatureSplit
from reprodistill.methods import MethodContext
from reprodistill.models.teacher import TimmTeacher
from reprodistill.peft import inject_lora
from reprodistill.reprogram.label_map import frequency_matrix, greedy_mapping
from reprodistill.reprogram.prompt import VisualPrompt

SPEC = InputSpec(size=(32, 32), channels=3, mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2))


def _images(n=4, seed=0):
    return torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_padding_prompt_frames_the_resized_image_and_trains_only_the_frame():
    vp = VisualPrompt(SPEC, "padding", pad=4)
    assert vp.mask.shape == (1, 1, 32, 32) and vp.mask.sum() == 32 * 32 - 24 * 24
    assert vp.mask[0, 0, 4:28, 4:28].sum() == 0
    x = _images()
    out = vp(x)
    assert out.shape == (4, 3, 32, 32)
    inner = to_unit(x, 3, (24, 24))
    expected = normalize(torch.nn.functional.pad(inner, (4, 4, 4, 4)), SPEC)  # W = 0: a plain black frame
    assert torch.allclose(out, expected, atol=1e-6)
    out.sum().backward()
    g = vp.weight.grad
    assert g[..., 4:28, 4:28].abs().sum() == 0 and g[..., :4, :].abs().sum() > 0


def test_additive_prompt_covers_the_whole_image():
    vp = VisualPrompt(SPEC, "additive", eps=0.1)
    with torch.no_grad():
        vp.weight.fill_(10.0)  # tanh -> 1: every pixel + 0.1
    assert torch.allclose(vp(_images()), normalize(to_unit(_images(), 3, (32, 32)) + 0.1, SPEC), atol=1e-5)
    with pytest.raises(Exception, match="pad"):
        VisualPrompt(SPEC, "padding", pad=16)


def test_learnable_resize_places_the_image_and_learns_its_scale():
    vp = VisualPrompt(SPEC, "padding", pad=4, learnable_resize=True)
    assert vp.scale.item() == pytest.approx(24 / 32, abs=1e-5)  # starts where the fixed frame is
    white = torch.full((2, 1, 28, 28), 255, dtype=torch.uint8)
    with torch.no_grad():
        unit = vp(white) * torch.tensor(SPEC.std).view(1, 3, 1, 1) + torch.tensor(SPEC.mean).view(1, 3, 1, 1)
    # W = 0: image (ones) in the centre 24x24, black frame outside (bilinear edges aside)
    assert torch.allclose(unit[..., 6:26, 6:26], torch.ones(1), atol=1e-5) and unit[..., :3, :].abs().max() < 1e-5
    with torch.no_grad():
        vp.weight.fill_(10.0)  # prompt = 1 everywhere outside the image: a white canvas whatever the scale
    out = vp(white)
    out.sum().backward()
    assert vp.scale_logit.grad is not None and vp.weight.grad[..., 12:20, 12:20].abs().sum() == 0
    vp2 = VisualPrompt(SPEC, "padding", pad=4, learnable_resize=True)
    loss = vp2(_images()).pow(2).mean()
    loss.backward()
    assert vp2.scale_logit.grad.abs() > 0  # the loss reaches the scale
    with pytest.raises(Exception, match="padding"):
        VisualPrompt(SPEC, "additive", learnable_resize=True)


def test_label_mapping_by_hand():
    freq = torch.tensor([[5, 1], [3, 4], [0, 9]])
    # largest count 9: target 1 -> source 2; then among source rows 0,1 and target 0: 5 -> source 0
    assert greedy_mapping(freq).tolist() == [0, 2]
    logits = torch.tensor([[0.0, 1.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    assert frequency_matrix(logits, torch.tensor([0, 0, 1]), 2).tolist() == [[1, 0], [1, 0], [0, 1]]
    with pytest.raises(ValueError):
        greedy_mapping(torch.zeros(1, 2))


def _fm_with_head():
    torch.manual_seed(0)
    return TimmTeacher("tiny-head", timm.create_model("resnet10t", num_classes=10), 32)


def _split(images, labels) -> FeatureSplit:
    """uint8 [N,C,H,W] images and labels as an engine split."""
    arr = images.permute(0, 2, 3, 1).numpy()
    return FeatureSplit(
        ImageDataset(Split(labels=labels.numpy(), images=arr), images.shape[1], tuple(images.shape[-2:]))
    )


def test_visual_prompt_with_label_mapping_trains_the_prompt_only():
    fm = _fm_with_head()
    before = {k: v.clone() for k, v in fm.state_dict().items()}
    ctx = MethodContext(cfg=RunConfig(methods=["visual_prompt"]), num_classes=2, teacher=fm)
    method = build_method("visual_prompt", ctx, pad=4)
    assert method.use_label_map
    images, labels = _images(16), torch.arange(16) % 2
    method.prepare(_split(images, labels), torch.device("cpu"))
    assert method.mapping.unique().numel() == 2  # distinct source classes
    batch = {"image": images, "label": labels}
    opt = torch.optim.Adam(method.parameters(), lr=0.1)
    assert [n for n, p in method.named_parameters() if p.requires_grad] == ["prompt.weight"]
    losses = []
    for _ in range(15):
        out = method(batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert losses[-1] < losses[0]
    assert all(torch.equal(v, before[k]) for k, v in fm.state_dict().items())


def test_visual_prompt_linear_head_for_an_fm_without_classes(tiny_teacher):
    ctx = MethodContext(cfg=RunConfig(methods=["visual_prompt"]), num_classes=3, teacher=tiny_teacher(32))
    method = build_method("visual_prompt", ctx)
    assert not method.use_label_map
    out = method({"image": _images(6), "label": torch.tensor([0, 1, 2, 0, 1, 2])})
    out.loss.backward()
    assert method.prompt.weight.grad.abs().sum() > 0 and method.head[1].weight.grad.abs().sum() > 0
    with pytest.raises(Exception, match="class head"):
        build_method("visual_prompt", ctx, output="label_map")


def test_lora_starts_equal_to_the_fm_and_trains_only_adapters_and_head(tiny_teacher):
    teacher = tiny_teacher(32)
    with torch.no_grad():  # timm zero-initialises each block's last BN scale: a random FM's residual paths are dead
        for m in teacher.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.fill_(1.0)
    ctx = MethodContext(cfg=RunConfig(methods=["lora"]), num_classes=2, teacher=teacher)
    method = build_method("lora", ctx, rank=4)
    x = _images()
    with torch.no_grad():
        assert torch.allclose(method.fm.features(x), teacher.features(x), atol=1e-5)  # B = 0 at init
    keys = list(method.state_dict())
    assert keys and all(k.startswith(("adapters.", "head.")) for k in keys)
    trainable = sum(p.numel() for p in method.parameters() if p.requires_grad)
    assert trainable < 0.2 * sum(p.numel() for p in teacher.parameters())
    opt = torch.optim.Adam(method.parameters(), lr=1e-2)
    batch = {"image": x, "label": torch.tensor([0, 1, 0, 1])}
    for _ in range(3):
        loss = method(batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert not torch.allclose(method.fm.features(x), teacher.features(x), atol=1e-4)  # the copy adapted
    assert not any("lora" in n for n, _ in teacher.named_modules())  # the shared FM was never touched


def test_lora_targets_attention_of_a_vit_and_refuses_bad_targets():
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=0)
    wrapped = inject_lora(vit, rank=2)
    assert len(wrapped) == len(vit.blocks)
    assert all(n.endswith("attn.qkv") for n, m in vit.named_modules() if type(m).__name__ == "LoRALinear")
    with pytest.raises(Exception, match="matched no"):
        inject_lora(timm.create_model("resnet10t"), target="nothing_here")


@pytest.mark.slow
def test_methods_through_the_fm_run_end_to_end(tmp_path, small_npz):
    """lora, visual_prompt and tdmr through the real run path (online FM, prepare hook, extra branches)."""
    from reprodistill.config import load_config
    from reprodistill.engine.run import run

    torch.manual_seed(0)
    torch.save(timm.create_model("resnet10t", num_classes=0).state_dict(), tmp_path / "fm.pt")
    over = [
        f"data.source={small_npz}", "methods=[lora,visual_prompt,tdmr]", "student.name=resnet10t",
        f"teacher.name={tmp_path / 'fm.pt'}", "teacher.arch=resnet10t", "teacher.image_size=32",
        f"teacher.cache_dir={tmp_path / 'cache'}", "train.epochs=2", "train.steps=null", "train.batch_size=16",
        "method_options.tdmr.stage1_epochs=1",
    ]  # fmt: skip
    res = run(load_config("default", over), run_dir=tmp_path / "run")
    by = {r.method: r for r in res.results}
    assert set(by) == {"lora", "visual_prompt", "tdmr"}
    assert all(0.0 <= r.test["auc"] <= 1.0 for r in res.results)
    assert "reprogrammed_fm" in by["tdmr"].test["extra"]
    assert by["tdmr"].params < by["lora"].params  # TDMR ships the student, the PEFT baselines the FM
    assert by["tdmr"].prepare_s > 0 and by["lora"].prepare_s > 0  # stage 1 / the trunk pass count as cost
    # cached: LoRA's frozen trunk (the input of its adapted stage) and TDMR's stage 1; no FM features of any view
    import json

    kinds = [json.loads(p.read_text())["kind"] for p in (tmp_path / "cache").glob("*.json")]
    assert kinds == ["stage-input:model.layer4.0"]
    assert len(list((tmp_path / "cache").glob("tdmr-stage1-*.pt"))) == 1


@pytest.fixture()
def vit_teacher(tmp_path):
    from reprodistill.config import TeacherConfig
    from reprodistill.models import create_teacher

    torch.manual_seed(0)
    torch.save(timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=0).state_dict(), tmp_path / "v.pt")
    return create_teacher(TeacherConfig(name=str(tmp_path / "v.pt"), arch="vit_tiny_patch16_224", image_size=32))


@pytest.mark.parametrize("mode", ["shallow", "deep"])
def test_vpt_prompt_tokens_train_through_the_frozen_vit(vit_teacher, mode):
    ctx = MethodContext(cfg=RunConfig(methods=["vpt"]), num_classes=2, teacher=vit_teacher)
    method = build_method("vpt", ctx, num_tokens=3, mode=mode)
    assert method.prompts.shape == ((12 if mode == "deep" else 1), 3, 192)
    x = _images()
    with torch.no_grad():  # the prompts change the features (they are attended to) but not their shape
        prompted = method.pooled(vit_teacher.prepare(x))
        assert prompted.shape == vit_teacher.features(x).shape
        assert not torch.allclose(prompted, vit_teacher.features(x), atol=1e-4)
    out = method({"image": x, "label": torch.tensor([0, 1, 0, 1])})
    out.loss.backward()
    assert method.prompts.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in vit_teacher.parameters())
    assert {k.split(".")[0] for k in method.state_dict()} == {"head", "prompts"}  # never the FM


def test_vpt_refuses_a_cnn_teacher(tiny_teacher):
    ctx = MethodContext(cfg=RunConfig(methods=["vpt"]), num_classes=2, teacher=tiny_teacher(32))
    with pytest.raises(Exception, match="Vision Transformer"):
        build_method("vpt", ctx)


def test_common_parent_of_adapted_layers():
    from reprodistill.peft.trunk import common_parent

    assert common_parent(["m.layer4.0.conv1", "m.layer4.2.conv3"]) == "m.layer4"
    assert common_parent(["m.layer4.0.conv1"]) == "m.layer4.0"  # a lone layer: its parent
    assert common_parent(["a.x", "b.y"]) == ""


class _Images(torch.utils.data.Dataset):
    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i], "label": self.labels[i], "index": torch.tensor(i)}


def test_lora_trunk_cache_trains_only_the_adapted_stage_and_matches_the_whole_fm(tiny_teacher):
    teacher = tiny_teacher(32)
    with torch.no_grad():
        for m in teacher.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.fill_(1.0)
    cfg = RunConfig(methods=["lora"])
    cfg.teacher.cache_dir = None
    method = build_method("lora", MethodContext(cfg=cfg, num_classes=2, teacher=teacher), rank=4)
    # every default adapter is in layer4 (one block in resnet10t), whose output is the FM's map
    assert method.stage_name == "model.layer4.0"
    x, y = _images(8), torch.tensor([0, 1] * 4)
    method.prepare(type("Split", (), {"dataset": _Images(x, y)})(), torch.device("cpu"))
    assert method.trunk_train.dtype == torch.float16 and method.trunk_train.shape[:2] == (8, 256)
    batch = {"image": x, "label": y, "index": torch.arange(8)}
    method.train()
    with torch.no_grad():  # the trunk path and the whole FM agree (up to the fp16 cache)
        assert torch.allclose(method.train_logits(batch), method.logits(x), atol=2e-2)
    opt = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(5):
        loss = method(batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert method.adapters[0][1].weight.abs().sum() > 0  # the adapters trained through the cached trunk
    with torch.no_grad():  # and evaluation, which runs the whole adapted FM, sees what training saw
        assert torch.allclose(method.train_logits(batch), method.logits(x), atol=2e-2)
    method.eval()
    assert torch.equal(method(batch).logits, method.logits(x))
    # adapters spread over a ViT's blocks (a norm runs after them): no trunk to cache
    vit = TimmTeacher("vit", timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=0), 32)
    assert build_method("lora", MethodContext(cfg=cfg, num_classes=2, teacher=vit), rank=2).stage_name is None
