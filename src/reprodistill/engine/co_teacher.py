"""A method's co-teacher: the student another finished run trained on the same images (e.g. FixMatch's), frozen,
loaded by the engine and handed to the method (methods never read run folders themselves).

A method asks for one with an option ``co_teacher: <run folder>`` (or a list of them); in a bench,
``co_teacher: cell:<row>`` names the same fraction and seed's cell of another row. The cell keeps ``cell:<row>`` in
its config and the run resolves it against its own folder (``<bench>/cells/<row>/<fraction-seed>``), so that a
bench folder resumes under any spelling of ``--dir`` and after it was moved or copied.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import torch

from reprodistill.config import RunConfig
from reprodistill.data.types import DataBundle
from reprodistill.engine.export import TrainedStudent, load_trained_student
from reprodistill.engine.run_dir import split_summary
from reprodistill.errors import ConfigError, ReprodistillError

log = logging.getLogger("reprodistill")

CELL_PREFIX = "cell:"
# The data settings that decide which images are in which split: a co-teacher trained under other values may have
# trained on this run's validation or test images.
SPLIT_KEYS = ("source", "root", "fraction", "k_per_class", "val_fraction", "test_fraction", "split_seed",
              "subset_seed", "split_by_patient", "class_names", "skip_bad_images", "csv")  # fmt: skip


def co_teacher_paths(options: Any) -> list[str]:
    """The runs ``options.co_teacher`` names (one path or a list; none where the option is absent or empty)."""
    value = getattr(options, "co_teacher", None)
    if not value:
        return []
    return [str(v) for v in ([value] if isinstance(value, str) else value)]


def resolve_co_teacher(value: str, run_dir: Path) -> Path:
    """The run folder ``value`` names: a path as given, or for ``cell:<row>`` the cell of that row with this run's
    fraction and seed, beside this run's cell in its bench (``<bench>/cells/<row>/<fraction-seed>``)."""
    if not value.startswith(CELL_PREFIX):
        return Path(value).expanduser()
    cells = run_dir.parent.parent
    if cells.name != "cells":
        raise ConfigError(
            f"co_teacher={value}: '{CELL_PREFIX}<row>' names another row's cell of the same seed in a bench, but "
            f"{run_dir} is not a bench cell (<bench>/cells/<row>/<fraction-seed>); give the co-teacher's run folder"
        )
    return cells / value[len(CELL_PREFIX) :] / run_dir.name


def load_co_teachers(
    options: Any, cfg: RunConfig, data: DataBundle, device: torch.device, run_dir: Path
) -> list[TrainedStudent]:
    """The runs ``options.co_teacher`` names (:func:`resolve_co_teacher` from ``run_dir``, this run's folder), each
    with its student frozen on ``device`` (none where the option is absent), after checking that each trained on
    this run's training split: same data settings, sizes and class counts. Their ``transfer_s`` belongs to the cost
    of the method that distils them."""
    return [_load_one(resolve_co_teacher(p, run_dir), cfg, data, device) for p in co_teacher_paths(options)]


def co_teacher_cost_s(co: TrainedStudent, cfg: RunConfig, kind: Optional[str]) -> float:
    """What a co-teacher adds to the cost of the run that distils it: its ``transfer_s``, less its FM pass where it
    read the very features this run reads (the same FM and teacher settings, data, view augmentation and feature
    kind: one cached pass, already counted in this run's own ``fm_feature_s``)."""
    from reprodistill.methods import METHODS

    method = METHODS.get(co.method)
    co_kind = method.feature_kind(method.parse_options(co.cfg.method_options.get(co.method)))
    same_pass = (
        kind is not None
        and co_kind == kind
        and co.cfg.teacher == cfg.teacher
        and co.cfg.data == cfg.data
        and (co.cfg.train.augment_shift, co.cfg.train.augment_flip) == (cfg.train.augment_shift, cfg.train.augment_flip)
    )
    return co.transfer_s - (co.fm_feature_s if same_pass else 0.0)


def _load_one(path: Path, cfg: RunConfig, data: DataBundle, device: torch.device) -> TrainedStudent:
    with torch.random.fork_rng(devices=[]):  # building it draws initial weights: leave the run's RNG stream as is
        trained = load_trained_student(path)
    other = trained.cfg.data
    differ = [f"data.{k} {getattr(other, k)!r} there, {getattr(cfg.data, k)!r} here" for k in SPLIT_KEYS
              if getattr(other, k) != getattr(cfg.data, k)]  # fmt: skip
    here = split_summary(data)
    differ += [f"{k} {trained.data.get(k)} there, {v} here" for k, v in here.items() if trained.data.get(k) != v]
    if differ:
        raise ReprodistillError(
            f"co_teacher {path} trained on other images than this run ({'; '.join(differ)}): its training images "
            "may be this run's validation or test images. Train the co-teacher with this run's data settings"
        )
    log.info("co-teacher: the %s student of %s (%s, %.1fM parameters; its training cost %.0f s, counted in this "
             "method's preparation)", trained.method, path, trained.student.arch,
             sum(p.numel() for p in trained.student.parameters()) / 1e6, trained.transfer_s)  # fmt: skip
    trained.student.to(device).requires_grad_(False)
    return trained
