"""Teachers from the two other model libraries medical FMs are published in: open_clip and Hugging Face transformers.

``open_clip:<model>`` takes the image tower of an open_clip model: a built-in config name or a model config file
with ``teacher.weights=<file>`` (e.g. ``open_clip:ViT-B-16 teacher.weights=clip.bin``), a downloaded hub folder
(``open_clip:local-dir:/models/BiomedCLIP``, holding ``open_clip_config.json`` and the weights), or
``open_clip:hf-hub:<repo>`` (needs internet). ``hf:<repo or folder>`` takes a ``transformers`` image encoder through
``AutoModel`` (DINOv2, ViT, ConvNeXt, ... e.g. ``hf:/models/rad-dino``); offline it only reads local files.

Preprocessing (size, mean/std, interpolation) comes from each model's own config: open_clip's preprocess config, or
the folder's image-processor config; images are resized whole to that size (no crop: medical images are small and
framed on purpose). Pooled features are the model's own embedding (``teacher.embedding``); the feature map of
map-based methods (DRD, FitNet, AT) is the last block's patch tokens laid out on their grid.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from reprodistill.config import TeacherConfig
from reprodistill.data.transforms import InputSpec
from reprodistill.errors import ConfigError, WeightsError
from reprodistill.models.teacher import Teacher, file_identity
from reprodistill.util.optional import require

# PIL resampling codes in image-processor configs -> the interpolations our preprocessing offers
_PIL_RESAMPLE = {2: "bilinear", 3: "bicubic"}


def tokens_to_map(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Patch tokens [B, N, C] whose last ``h*w`` entries are the patches -> a map [B, C, h, w] (prefix tokens such as
    CLS or registers dropped)."""
    h, w = grid
    patches = tokens[:, tokens.shape[1] - h * w :]
    return patches.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)


class OpenClipTeacher(Teacher):
    """The image tower of an open_clip model; ``embedding='pre'`` is the pooled token before CLIP's projection."""

    def __init__(self, cfg: TeacherConfig) -> None:
        open_clip = require("open_clip", "this teacher", "open_clip", ConfigError)
        ref = cfg.name.split(":", 1)[1]
        if not ref:
            raise ConfigError("teacher.name=open_clip:<model>: name a model, e.g. open_clip:ViT-B-16")
        weights = cfg.weights
        if weights is not None and not Path(weights).expanduser().is_file():
            raise WeightsError(f"teacher.weights={weights}: no such file")
        arch = ref
        if ref.endswith(".json") and Path(ref).expanduser().is_file():  # a model config file: open_clip:<cfg.json>
            open_clip.add_model_config(str(Path(ref).expanduser()))
            arch = Path(ref).stem
        try:
            model = open_clip.create_model(arch, pretrained=weights, force_image_size=cfg.image_size)
        except Exception as e:  # noqa: BLE001 - unknown names, missing folders and hub errors all land here
            raise WeightsError(
                f"teacher {cfg.name}: open_clip could not build it ({type(e).__name__}: {str(e)[:200]}). Offline, use "
                "open_clip:<built-in config> with teacher.weights=<file>, or open_clip:local-dir:<folder with "
                "open_clip_config.json and the weights>"
            ) from None
        if weights is None and not ref.startswith(("local-dir:", "hf-hub:")):
            raise WeightsError(
                f"teacher {cfg.name}: a built-in open_clip config has random weights; give teacher.weights=<file>"
            )
        pre = open_clip.get_model_preprocess_cfg(model)
        size = pre.get("size", 224)
        size = (size, size) if isinstance(size, int) else tuple(size)
        spec = InputSpec(
            size=size,
            channels=3,
            mean=tuple(pre.get("mean", (0.48145466, 0.4578275, 0.40821073))),
            std=tuple(pre.get("std", (0.26862954, 0.26130258, 0.27577711))),
            interpolation=pre.get("interpolation", "bicubic") if pre.get("interpolation") == "bilinear" else "bicubic",
        )
        separable = hasattr(model.visual, "trunk") or isinstance(getattr(model.visual, "proj", None), nn.Parameter)
        embedding = _embedding(cfg, ("pre", "post") if separable else ("post",))
        source = file_identity(weights) if weights else file_identity(ref.removeprefix("local-dir:"))
        identity = f"open_clip:{ref}:{source}:{embedding}"
        super().__init__(cfg.name, spec, 1, identity)
        self.visual = model.visual
        self.embedding = embedding
        self.freeze().measure_dims()

    @property
    def network(self) -> nn.Module:
        return self.visual

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        out = self.visual.forward_intermediates(x, indices=1, output_fmt="NCHW", intermediates_only=True)
        return out["image_intermediates"][-1]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        v = self.visual
        if self.embedding == "post":
            return v(x)
        if hasattr(v, "trunk"):  # open_clip's TimmModel: a timm trunk, then the projection head
            return v.trunk(x)
        proj = v.proj
        v.proj = None  # the tower's own pooling without the projection (restored below)
        try:
            out = v(x)
        finally:
            v.proj = proj
        return out[0] if isinstance(out, tuple) else out


class HFTeacher(Teacher):
    """A ``transformers`` image encoder (``AutoModel``) with its image processor's preprocessing."""

    def __init__(self, cfg: TeacherConfig) -> None:
        transformers = require("transformers", "this teacher", "hf", ConfigError)
        ref = cfg.name.split(":", 1)[1]
        local = Path(ref).expanduser()
        offline = local.is_dir()
        try:
            model = transformers.AutoModel.from_pretrained(str(local) if offline else ref, local_files_only=offline)
            proc = transformers.AutoImageProcessor.from_pretrained(
                str(local) if offline else ref, local_files_only=offline
            )
        except Exception as e:  # noqa: BLE001 - missing files, unknown repos and hub errors all land here
            need = "config.json, the weights (model.safetensors) and preprocessor_config.json"
            raise WeightsError(
                f"teacher {cfg.name}: transformers could not load it ({type(e).__name__}: {str(e)[:200]}). Offline, "
                f"give hf:<folder> holding {need} (e.g. a downloaded hub snapshot)"
            ) from None
        size = cfg.image_size or _processor_size(proc)
        resample = getattr(proc, "resample", 2)
        spec = InputSpec(
            size=(size, size),
            channels=3,
            mean=tuple(float(m) for m in getattr(proc, "image_mean", (0.5, 0.5, 0.5))),
            std=tuple(float(s) for s in getattr(proc, "image_std", (0.5, 0.5, 0.5))),
            interpolation=_PIL_RESAMPLE.get(int(getattr(resample, "value", resample)), "bilinear"),
        )
        embedding = _embedding(cfg, ("cls", "mean"))
        identity = f"hf:{file_identity(str(local)) if offline else ref}:{embedding}"
        super().__init__(cfg.name, spec, 1, identity)
        self.model = model
        self.embedding = embedding
        self.patch = getattr(model.config, "patch_size", None)
        self.freeze().measure_dims()

    @property
    def network(self) -> nn.Module:
        return self.model

    def _hidden(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).last_hidden_state

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        h = self._hidden(x)
        if h.ndim == 4:  # CNN encoders (ConvNeXt, ResNet) already give a map
            return h
        if not self.patch:
            raise ConfigError(f"{self.name}: tokens without a patch size cannot be laid out as a map")
        p = self.patch if isinstance(self.patch, int) else self.patch[0]
        return tokens_to_map(h, (x.shape[-2] // p, x.shape[-1] // p))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        h = self._hidden(x)
        if h.ndim == 4:
            return h.mean(dim=(-2, -1))
        if self.embedding == "mean":
            if not self.patch:
                raise ConfigError(f"{self.name}: teacher.embedding=mean needs the patch size, which its config lacks")
            p = self.patch if isinstance(self.patch, int) else self.patch[0]
            n = (x.shape[-2] // p) * (x.shape[-1] // p)
            return h[:, -n:].mean(dim=1)
        return h[:, 0]  # the class token of the last layer


def _embedding(cfg: TeacherConfig, allowed: tuple[str, ...]) -> str:
    """``teacher.embedding`` for this teacher kind ('auto' = the first of ``allowed``)."""
    if cfg.embedding == "auto":
        return allowed[0]
    if cfg.embedding not in allowed:
        raise ConfigError(
            f"teacher.embedding={cfg.embedding!r} does not apply to {cfg.name}; it offers {list(allowed)}"
        )
    return cfg.embedding


def _processor_size(proc) -> int:
    """The square input size an image processor produces (its crop size when it crops, else its resize size)."""
    for attr in ("crop_size", "size") if getattr(proc, "do_center_crop", False) else ("size", "crop_size"):
        value = getattr(proc, attr, None)
        if value is None:
            continue
        get = value.get if isinstance(value, dict) else lambda k, v=value: getattr(v, k, None)
        for key in ("height", "shortest_edge", "width"):
            if found := get(key):
                return int(found)
        if isinstance(value, int):
            return value
    return 224
