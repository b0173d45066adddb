"""Students: any timm architecture, split into a feature extractor and a linear head so methods can reach both."""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

from reprodistill.config import StudentConfig
from reprodistill.data.transforms import InputSpec
from reprodistill.errors import WeightsError
from reprodistill.models.pretrained import load_efficientnet_lite0, read_state_dict
from reprodistill.models.timm_factory import TimmModel, create_timm_model

# Student names whose ImageNet weights ship offline, mapped to the timm architecture they load into.
OFFLINE_PRETRAINED = {"efficientnet_lite0": "tf_efficientnet_lite0", "tf_efficientnet_lite0": "tf_efficientnet_lite0"}


class Student(nn.Module):
    """A timm model with ``features(x) -> [B,D]`` and ``head: Linear(D, K)``; ``forward = head(features(x))``.

    Attributes:
        spec: Input preprocessing for this student.
        feature_dim: D, the pooled feature size the head sees.
    """

    model: TimmModel

    def __init__(self, arch: str, model: nn.Module, spec: InputSpec) -> None:
        super().__init__()
        self.arch = arch
        self.model = cast(TimmModel, model)  # a timm model, or anything with its four calls (tests' tiny CNNs)
        self.spec = spec
        # what forward_head(pre_logits=True) returns: for MobileNetV3 that is after conv_head (1024, not 576)
        self.feature_dim: int = int(getattr(model, "head_hidden_size", None) or self.model.num_features)

    @property
    def head(self) -> nn.Module:
        return self.model.get_classifier()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def create_student(cfg: StudentConfig, num_classes: int, default_size: tuple[int, int]) -> Student:
    """Build the student ``cfg.name`` with ``num_classes`` outputs, from scratch or from pretrained weights."""
    arch = OFFLINE_PRETRAINED.get(cfg.name, cfg.name) if cfg.pretrained else cfg.name
    size = (cfg.image_size, cfg.image_size) if cfg.image_size else default_size
    kwargs: dict[str, Any] = dict(
        num_classes=num_classes, in_chans=cfg.in_chans, drop_rate=cfg.drop_rate, img_size=size[0]
    )
    model = create_timm_model(arch, **kwargs)
    if cfg.checkpoint:
        sd = read_state_dict(cfg.checkpoint)
        own = model.state_dict()
        sd = {k: v for k, v in sd.items() if k in own and own[k].shape == v.shape}  # the task head is new
        missing = [k for k in own if k not in sd and not k.startswith(_head_prefix(model))]
        if missing:
            raise WeightsError(
                f"student checkpoint {cfg.checkpoint} lacks {len(missing)} tensors of {arch}, e.g. {missing[:3]}"
            )
        model.load_state_dict(sd, strict=False)
    elif cfg.pretrained:
        if arch == "tf_efficientnet_lite0":
            load_efficientnet_lite0(model, keep_classifier=False)
        else:
            try:
                model = create_timm_model(arch, pretrained=True, **kwargs)
            except Exception as e:  # noqa: BLE001
                raise WeightsError(
                    f"student {arch}: no offline ImageNet weights ({type(e).__name__}). Use student.checkpoint=<file>, "
                    f"student.pretrained=false, or a student with packaged weights: {sorted(OFFLINE_PRETRAINED)}"
                ) from None
    dc = model.pretrained_cfg
    if cfg.pretrained or cfg.checkpoint:
        mean, std = tuple(dc.get("mean", (0.5,) * 3)), tuple(dc.get("std", (0.5,) * 3))
    else:
        mean, std = (0.5,) * 3, (0.5,) * 3
    spec = InputSpec(size=size, channels=cfg.in_chans, mean=mean, std=std)
    return Student(arch, model, spec)


def _head_prefix(model: TimmModel) -> str:
    head = model.pretrained_cfg.get("classifier", "classifier")
    return (head[0] if isinstance(head, (list, tuple)) else head) + "."
