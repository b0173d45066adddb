"""Build the frozen teacher a config names: a packaged one, ``open_clip:`` / ``hf:`` (optional packages), a checkpoint
file with ``teacher.arch``, ``hf-hub:<repo>`` or a timm model name.

Kept apart from :mod:`reprodistill.models.teacher` because the hub teachers subclass its ``Teacher``: building them
there would make the two modules import each other.
"""

from __future__ import annotations

from pathlib import Path

from reprodistill.config import TeacherConfig
from reprodistill.errors import ConfigError, WeightsError
from reprodistill.models.teacher import TEACHERS, Teacher, TimmTeacher, file_identity, timm_from_checkpoint
from reprodistill.models.timm_factory import create_timm_model


def _size_kwargs(cfg: TeacherConfig) -> dict:
    return {"img_size": cfg.image_size} if cfg.image_size else {}


def create_teacher(cfg: TeacherConfig) -> Teacher:
    """Build the frozen teacher named by ``cfg.name`` (see module docstring), pooling ``cfg.pool_layers`` too."""
    teacher = _build_teacher(cfg)
    layers = teacher.default_pool_layers if cfg.pool_layers == "auto" else cfg.pool_layers
    return teacher.set_pool_layers(layers)


def _build_teacher(cfg: TeacherConfig) -> Teacher:
    import timm  # noqa: PLC0415

    if cfg.name.startswith(("open_clip:", "hf:")):
        from reprodistill.models.hub_teachers import HFTeacher, OpenClipTeacher  # noqa: PLC0415 - optional packages

        return OpenClipTeacher(cfg) if cfg.name.startswith("open_clip:") else HFTeacher(cfg)

    if cfg.name in TEACHERS:
        return TEACHERS.get(cfg.name)(cfg)
    as_path = Path(cfg.name).expanduser()
    if as_path.suffix in (".pt", ".pth", ".bin", ".safetensors") or as_path.is_file():
        if not cfg.arch:
            raise ConfigError(f"teacher {cfg.name} is a checkpoint file: also set teacher.arch=<timm architecture>")
        model = timm_from_checkpoint(cfg.arch, as_path, **_size_kwargs(cfg))
        return TimmTeacher(as_path.stem, model, cfg.image_size, f"{cfg.arch}:{file_identity(str(as_path))}")
    if cfg.name.startswith("hf-hub:") or timm.is_model(cfg.name):
        if cfg.weights:
            model = timm_from_checkpoint(cfg.name, cfg.weights, **_size_kwargs(cfg))
            return TimmTeacher(cfg.name, model, cfg.image_size, f"{cfg.name}:{file_identity(cfg.weights)}")
        try:
            model = create_timm_model(cfg.name, pretrained=True, **_size_kwargs(cfg))
        except Exception as e:  # noqa: BLE001 - offline hub access fails in many ways
            raise WeightsError(
                f"teacher {cfg.name}: could not fetch pretrained weights ({type(e).__name__}: {str(e)[:160]}). "
                f"Offline, give teacher.weights=<local checkpoint> or use a packaged teacher: {TEACHERS.names()}"
            ) from None
        return TimmTeacher(cfg.name, model, cfg.image_size)
    raise ConfigError(
        f"unknown teacher {cfg.name!r}: use one of {TEACHERS.names()}, a timm model name, hf-hub:<repo>, "
        "or a checkpoint file with teacher.arch"
    )
