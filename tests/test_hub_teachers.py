"""open_clip and Hugging Face transformers teachers, on tiny random-weight models saved locally (no internet)."""

import csv
import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from reprodistill.config import TeacherConfig
from reprodistill.data import ImageDataset
from reprodistill.data.sources import Split
from reprodistill.errors import ConfigError, WeightsError
from reprodistill.features.cache import cache_key
from reprodistill.models import create_teacher

open_clip = pytest.importorskip("open_clip")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """A downloaded-hub-style open_clip folder: open_clip_config.json + open_clip_model.safetensors (ViT, 64 px)."""
    from open_clip.model import CLIP
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("clip")
    model_cfg = {
        "embed_dim": 24,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 32, "patch_size": 16, "head_width": 16},
        "text_cfg": {"context_length": 8, "vocab_size": 100, "width": 16, "heads": 1, "layers": 1},
    }
    pre = {"mean": [0.4, 0.4, 0.4], "std": [0.2, 0.25, 0.3], "interpolation": "bicubic"}
    (d / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": pre}))
    torch.manual_seed(0)
    model = CLIP(**model_cfg)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, d / "open_clip_model.safetensors")
    return d


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A transformers folder: a tiny DINOv2 (64 px, patch 16) + its image processor config."""
    d = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    cfg = transformers.Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=64, patch_size=16
    )
    transformers.Dinov2Model(cfg).save_pretrained(d)
    transformers.BitImageProcessor(
        size={"shortest_edge": 64},
        crop_size={"height": 64, "width": 64},
        do_center_crop=True,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
        resample=3,
    ).save_pretrained(d)
    return d


def _images(n=3, size=28):
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=g)


def test_open_clip_teacher_is_the_image_tower_with_its_own_preprocessing(clip_dir):
    t = create_teacher(TeacherConfig(name=f"open_clip:local-dir:{clip_dir}"))
    assert t.spec.size == (64, 64) and t.spec.mean == (0.4, 0.4, 0.4) and t.spec.std == (0.2, 0.25, 0.3)
    assert t.spec.interpolation == "bicubic" and t.pool_layers == ()
    images = _images()
    x = t.prepare(images)
    pre = t.features(images)  # default: the pooled token before CLIP's projection
    ref = open_clip.create_model(f"local-dir:{clip_dir}").eval()
    with torch.no_grad():
        post = ref.encode_image(x)
    assert pre.shape == (3, 32) and t.feature_dim == 32 and post.shape == (3, 24)
    torch.testing.assert_close(pre @ ref.visual.proj.detach(), post, rtol=1e-4, atol=1e-5)
    assert t.map_shape() == (32, 4, 4)  # the last block's 16 patch tokens on their 4 x 4 grid
    post_t = create_teacher(TeacherConfig(name=f"open_clip:local-dir:{clip_dir}", embedding="post"))
    torch.testing.assert_close(post_t.features(images), post, rtol=1e-4, atol=1e-5)
    assert post_t.identity != t.identity  # the embedding choice keys the cache too
    with pytest.raises(ConfigError, match="teacher.embedding='cls'"):
        create_teacher(TeacherConfig(name=f"open_clip:local-dir:{clip_dir}", embedding="cls"))
    with pytest.raises(WeightsError, match="teacher.weights"):
        create_teacher(TeacherConfig(name="open_clip:ViT-B-32"))  # a built-in config alone has random weights
    # the same model as a config file + a weights file
    config = json.loads((clip_dir / "open_clip_config.json").read_text())["model_cfg"]
    (clip_dir.parent / "tiny-clip.json").write_text(json.dumps(config))
    weights = str(clip_dir / "open_clip_model.safetensors")
    by_file = create_teacher(TeacherConfig(name=f"open_clip:{clip_dir.parent / 'tiny-clip.json'}", weights=weights))
    with torch.no_grad():  # same weights; its preprocessing is open_clip's default (the file has no preprocess_cfg)
        torch.testing.assert_close(by_file.embed(x), t.embed(x))
    assert by_file.spec.mean != t.spec.mean and by_file.identity != t.identity
    with pytest.raises(WeightsError, match="open_clip_config.json"):
        create_teacher(TeacherConfig(name=f"open_clip:local-dir:{clip_dir / 'missing'}"))


def test_hf_teacher_uses_the_class_token_and_the_image_processor(hf_dir):
    t = create_teacher(TeacherConfig(name=f"hf:{hf_dir}"))
    assert t.spec.size == (64, 64) and t.spec.interpolation == "bicubic"
    assert t.spec.mean == pytest.approx((0.485, 0.456, 0.406)) and t.spec.std == pytest.approx((0.229, 0.224, 0.225))
    images = _images()
    ref = transformers.AutoModel.from_pretrained(hf_dir).eval()
    with torch.no_grad():
        hidden = ref(pixel_values=t.prepare(images)).last_hidden_state  # [3, 1 + 16, 32]
    torch.testing.assert_close(t.features(images), hidden[:, 0], rtol=1e-4, atol=1e-5)
    fmap = t.feature_maps(images)
    assert fmap.shape == (3, 32, 4, 4)
    torch.testing.assert_close(fmap.flatten(2).transpose(1, 2), hidden[:, 1:], rtol=1e-4, atol=1e-5)
    mean_t = create_teacher(TeacherConfig(name=f"hf:{hf_dir}", embedding="mean"))
    torch.testing.assert_close(mean_t.features(images), hidden[:, 1:].mean(1), rtol=1e-4, atol=1e-5)
    with pytest.raises(WeightsError, match="preprocessor_config.json"):
        create_teacher(TeacherConfig(name=f"hf:{hf_dir / 'missing'}"))


def test_the_preprocessing_record_keys_the_feature_cache(hf_dir):
    t = create_teacher(TeacherConfig(name=f"hf:{hf_dir}"))
    ds = ImageDataset(Split(np.zeros(2, dtype=np.int64), np.zeros((2, 28, 28, 1), dtype=np.uint8)), 1, (28, 28))
    key = cache_key(t, ds, "pooled")
    for change in ({"mean": (0.5, 0.5, 0.5)}, {"size": (72, 72)}, {"interpolation": "bilinear"}):
        t.spec = dataclasses.replace(t.spec, **change)
        assert cache_key(t, ds, "pooled") != key, change
    # replacing a file in the model folder changes the teacher's identity, hence the key
    other = create_teacher(TeacherConfig(name=f"hf:{hf_dir}"))
    cfg_file = hf_dir / "preprocessor_config.json"
    cfg_file.write_text(cfg_file.read_text().replace("0.485", "0.5"))
    assert create_teacher(TeacherConfig(name=f"hf:{hf_dir}")).identity != other.identity


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind,methods",
    [("open_clip", "[linear_probe,kd,rd,drd,tdmr,lora]"), ("hf", "[linear_probe,kd,rd,drd,tdmr,lora]")],
    ids=["open_clip", "hf"],
)
def test_cli_runs_fm_methods_with_each_teacher_kind(kind, methods, clip_dir, hf_dir, small_npz, tmp_path):
    extra = []
    if kind == "open_clip":  # the config-file + weights-file form (the local-dir form is tested above)
        config = tmp_path / "tiny-clip.json"
        config.write_text(json.dumps(json.loads((clip_dir / "open_clip_config.json").read_text())["model_cfg"]))
        name, extra = f"open_clip:{config}", [f"teacher.weights={clip_dir / 'open_clip_model.safetensors'}"]
    else:
        name = f"hf:{hf_dir}"
    cmd = [
        sys.executable, "-m", "reprodistill", "distill", f"--run-dir={tmp_path / 'run'}", f"teacher.name={name}",
        f"data.source={small_npz}", f"methods={methods}", "student.name=resnet10t", "train.epochs=1",
        "train.steps=2", "train.batch_size=16", f"teacher.cache_dir={tmp_path / 'cache'}",
        "method_options.tdmr.stage1_max_steps=2", *extra,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.DictReader(open(tmp_path / "run" / "results.csv")))
    assert [r["method"] for r in rows] == methods.strip("[]").split(",")
    record = json.loads((tmp_path / "run" / "teacher.json").read_text())
    assert record["name"] == name and record["preprocessing"]["size"] == [64, 64] and record["pooled_dim"] == 32
    assert all(0.0 <= float(r["auc"]) <= 1.0 for r in rows)


def test_lora_adapts_the_attention_or_mlp_of_each_teacher_kind(clip_dir, hf_dir):
    """LoRA's default targets on transformers (q/v projections) and open_clip (block MLPs) models; vpt, which needs
    a timm ViT, refuses with what to use instead."""
    from reprodistill.config import RunConfig
    from reprodistill.methods import MethodContext
    from reprodistill.peft.lora import default_targets, inject_lora

    hf = create_teacher(TeacherConfig(name=f"hf:{hf_dir}"))
    clip = create_teacher(TeacherConfig(name=f"open_clip:local-dir:{clip_dir}"))
    assert default_targets(hf) == r"attention\.(q_proj|v_proj)$"
    assert default_targets(clip) == r"resblocks\.\d+\.mlp\.(c_fc|c_proj)$"
    images = _images()
    for teacher, n in ((hf, 4), (clip, 4)):  # 2 blocks x 2 layers each
        before = teacher.features(images)
        wrapped = inject_lora(teacher, rank=2)
        assert len(wrapped) == n
        torch.testing.assert_close(teacher.features(images), before)  # LoRA starts as the identity (B = 0)
    with pytest.raises(ConfigError, match="vpt needs a timm Vision Transformer.*lora or visual_prompt"):
        from conftest import build_method

        build_method("vpt", MethodContext(cfg=RunConfig(methods=["vpt"]), num_classes=2, teacher=hf))
