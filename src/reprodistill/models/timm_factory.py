"""One place that calls ``timm.create_model``, so every model honours the input size in the same way."""

from __future__ import annotations

from typing import Optional

from torch import nn

from reprodistill.errors import ConfigError


def create_timm_model(arch: str, img_size: Optional[int] = None, pretrained: bool = False, **kwargs) -> nn.Module:
    """``timm.create_model`` that passes ``img_size`` to models that take one (ViTs size their position embeddings
    and patch grid from it) and leaves it out for CNNs, which accept any size."""
    import timm  # noqa: PLC0415 - keeps `import reprodistill` light

    if not timm.is_model(arch) and not arch.startswith("hf-hub:"):
        close = timm.list_models(f"*{arch.split('_')[0]}*")[:8]
        raise ConfigError(f"unknown timm architecture {arch!r} (e.g. {close or ['resnet18', 'mobilenetv3_small_100']})")
    if img_size:
        try:
            return timm.create_model(arch, pretrained=pretrained, img_size=img_size, **kwargs)
        except TypeError:
            pass
    return timm.create_model(arch, pretrained=pretrained, **kwargs)
