"""One place that calls ``timm.create_model``, so every model honours the input size in the same way."""

from __future__ import annotations

from typing import Any, Optional, cast

import torch
from torch import nn

from reprodistill.errors import ConfigError


class TimmModel(nn.Module):
    """For typing only: a timm model as reprodistill calls it (``timm.create_model`` returns a plain ``nn.Module``,
    whose other attributes type-check as tensors). Students and timm teachers hold their network as this."""

    num_features: int
    num_classes: int
    pretrained_cfg: dict[str, Any]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        raise NotImplementedError

    def get_classifier(self) -> nn.Module:
        raise NotImplementedError

    def reset_classifier(self, num_classes: int, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError


def create_timm_model(arch: str, img_size: Optional[int] = None, pretrained: bool = False, **kwargs: Any) -> TimmModel:
    """``timm.create_model`` that passes ``img_size`` to models that take one (ViTs size their position embeddings
    and patch grid from it) and leaves it out for CNNs, which accept any size."""
    import timm  # noqa: PLC0415 - keeps `import reprodistill` light

    if not timm.is_model(arch) and not arch.startswith("hf-hub:"):
        close = timm.list_models(f"*{arch.split('_')[0]}*")[:8]
        raise ConfigError(f"unknown timm architecture {arch!r} (e.g. {close or ['resnet18', 'mobilenetv3_small_100']})")
    if img_size:
        try:
            return cast(TimmModel, timm.create_model(arch, pretrained=pretrained, img_size=img_size, **kwargs))
        except TypeError:
            pass
    return cast(TimmModel, timm.create_model(arch, pretrained=pretrained, **kwargs))
