import pytest
import torch

from reprodistill.config import StudentConfig
from reprodistill.errors import ConfigError, WeightsError
from reprodistill.models import create_student
from reprodistill.models.pretrained import read_state_dict


@pytest.mark.parametrize(
    "name, size, dim",
    [
        ("resnet18", 28, 512),
        ("mobilenetv3_small_100", 28, 1024),
        ("efficientnet_lite0", 28, 1280),
        ("vit_tiny_patch16_224", 32, 192),
    ],
)
def test_students_split_into_features_and_head(name, size, dim):
    st = create_student(StudentConfig(name=name, image_size=size), num_classes=3, default_size=(28, 28))
    x = torch.rand(2, 3, size, size)
    f = st.features(x)
    assert f.shape == (2, dim) == (2, st.feature_dim)
    assert isinstance(st.head, torch.nn.Linear) and st.head.out_features == 3
    assert torch.allclose(st(x), st.head(f))


def test_pretrained_efficientnet_lite0_student_uses_packaged_imagenet_weights():
    st = create_student(StudentConfig(name="efficientnet_lite0", pretrained=True), num_classes=2, default_size=(64, 64))
    assert st.arch == "tf_efficientnet_lite0" and st.spec.mean == (0.5, 0.5, 0.5)
    from reprodistill.models.pretrained import efficientnet_lite0_file

    stem = read_state_dict(efficientnet_lite0_file())["_conv_stem.weight"]
    assert torch.equal(st.model.conv_stem.weight.detach(), stem)
    gray = create_student(StudentConfig(name="efficientnet_lite0", pretrained=True, in_chans=1), 2, (64, 64))
    assert torch.allclose(gray.model.conv_stem.weight.detach(), stem.sum(1, keepdim=True))


def test_student_checkpoint_and_errors(tmp_path):
    src = create_student(StudentConfig(name="resnet18"), num_classes=10, default_size=(28, 28))
    torch.save(src.model.state_dict(), tmp_path / "r18.pth")
    st = create_student(StudentConfig(name="resnet18", checkpoint=str(tmp_path / "r18.pth")), 2, (28, 28))
    assert torch.equal(st.model.conv1.weight, src.model.conv1.weight)
    assert st.head.out_features == 2  # new task head
    with pytest.raises(WeightsError, match="lacks"):
        create_student(StudentConfig(name="mobilenetv3_small_100", checkpoint=str(tmp_path / "r18.pth")), 2, (28, 28))
    with pytest.raises(ConfigError, match="unknown timm architecture 'resnet1800'"):
        create_student(StudentConfig(name="resnet1800"), 2, (28, 28))
