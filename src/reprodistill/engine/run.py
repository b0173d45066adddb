"""A run: build data and teacher once, train and test every configured method on them, write the run folder
(layout: :mod:`reprodistill.engine.run_dir`)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable, Optional

import torch

from reprodistill.config import RunConfig, load_config
from reprodistill.data import ImageDataset, load_data
from reprodistill.data.sources import DataBundle, UnlabelledPool
from reprodistill.engine import distributed
from reprodistill.engine.co_teacher import co_teacher_cost_s, load_co_teachers
from reprodistill.engine.environment import environment, setup_logging
from reprodistill.engine.loop import class_weights, resolve_device, seed_everything
from reprodistill.engine.method_run import retest, train_and_test
from reprodistill.engine.results import RunResult
from reprodistill.engine.run_dir import RunDir
from reprodistill.errors import ReprodistillError
from reprodistill.features.cache import CACHE_SETTING, check_writable, resolve_cache_dir
from reprodistill.features.fm_pass import FMPass
from reprodistill.features.run_features import (
    KindFeatures,
    build_teacher,
    kind_features,
    method_splits,
    unlabelled_pool,
)
from reprodistill.methods import METHODS, Method, MethodContext, check_config
from reprodistill.models import create_student
from reprodistill.models.teacher import Teacher

log = logging.getLogger("reprodistill")


def run(
    cfg: RunConfig, run_dir: Optional[Path] = None, resume: bool = False, teacher: Optional[Teacher] = None
) -> RunResult:
    """Train and test every method of ``cfg`` on the same data, splits and budget; return their results.

    An existing ``run_dir`` started with the same config is resumed from each method's last.pt; methods that had
    finished are kept, not retrained. ``teacher`` reuses an FM already built from ``cfg.teacher`` (bench cells).
    The run folder is locked while this runs: a second process on the same folder stops with a clear message.
    """
    check_config(cfg)
    device = resolve_device(cfg.train.device)
    distributed.init(device)
    # every rank must use rank 0's folder (a new folder's name has a time stamp)
    folder = RunDir(distributed.broadcast_object(Path(run_dir) if run_dir else RunDir.new(cfg).path))
    if distributed.is_main():
        check_writable(folder.path, "--run-dir (or out_dir)")
    return _locked(folder, lambda: _run(cfg, folder, resume, teacher, device))


def retest_run(run_dir: Path, teacher: Optional[Teacher] = None) -> RunResult:
    """Test every finished method of the run in ``run_dir`` again (its stored best.pt, with the config it trained
    with) using the current evaluation code; nothing trains. The run's config.yaml and env.json stay as they were
    (they describe the training); ``retest.json`` records the environment of the re-test."""
    folder = RunDir(Path(run_dir))
    if not folder.config.is_file():
        raise ReprodistillError(f"{folder.path} holds no run (no config.yaml): nothing to re-test")
    cfg = check_config(load_config(str(folder.config)))
    device = resolve_device(cfg.train.device)
    distributed.init(device)
    return _locked(folder, lambda: _run(cfg, folder, True, teacher, device, retesting=True))


def _locked(folder: RunDir, go: Callable[[], RunResult]) -> RunResult:
    """Run ``go`` with rank 0 holding the folder's lock (the other ranks follow rank 0 and take no lock)."""
    if not distributed.is_main():
        return go()
    with folder.lock():
        return go()


def _run(
    cfg: RunConfig,
    folder: RunDir,
    resume: bool,
    teacher: Optional[Teacher],
    device: torch.device,
    retesting: bool = False,
) -> RunResult:
    t_start, main = time.perf_counter(), distributed.is_main()
    resume = retesting or folder.holds_same_run(cfg) or resume
    distributed.barrier()  # every rank has read the old config before rank 0 rewrites it
    methods = [METHODS.get(m) for m in cfg.methods]
    _open_folder(cfg, folder, methods, retesting, resume, device)
    data = _load(cfg, folder)
    datasets = {s: ImageDataset(getattr(data, s), data.channels, data.load_size) for s in ("train", "val", "test")}
    pool = unlabelled_pool(data, [m.name for m in methods if m.uses_unlabelled], cfg)
    result = RunResult(run_dir=folder.path)
    if teacher is None and any(m.uses_teacher for m in methods):
        teacher = build_teacher(cfg, device)
    if teacher is not None and main:
        folder.write_teacher(teacher)
    options = {m: m.parse_options(cfg.method_options.get(m.name)) for m in methods}
    kinds = {m: m.feature_kind(options[m]) for m in methods}
    per_batch: dict[str, bool] = {}  # each kind, and whether some method reads it batch by batch
    for m, kind in kinds.items():
        if kind:
            per_batch[kind] = per_batch.get(kind, False) or m.reads_batch_features
    features = _teacher_features(teacher, datasets, data, pool, per_batch, cfg, device, result)
    weights = class_weights(data.train.labels, data.num_classes, cfg.train.class_weights)
    for method_cls in methods:
        seed_everything(cfg.train.seed)
        student = create_student(cfg.student, data.num_classes, data.load_size) if method_cls.uses_student else None
        co = load_co_teachers(options[method_cls], cfg, data, device, folder.path)
        ctx = MethodContext(
            cfg=cfg,
            num_classes=data.num_classes,
            student=student,
            teacher=teacher if method_cls.uses_teacher else None,
            class_weights=None if weights is None else weights.to(device),
            co_teachers=tuple(c.student for c in co),
        )
        method: Method = method_cls(ctx, options[method_cls]).to(device)
        kind = kinds[method_cls]
        batches_read = bool(kind) and method_cls.reads_batch_features
        online = None
        if batches_read and cfg.teacher.features == "online" and teacher is not None:
            online = teacher.features if kind == "pooled" else teacher.feature_maps
        mixed = (data, pool, cfg.data.unlabelled_share) if pool is not None and method_cls.uses_unlabelled else None
        splits = method_splits(datasets, features.get(kind) if kind else None, online, mixed, batches_read)
        fm_s = result.fm_pass_s.get(kind, 0.0) if kind else 0.0
        if retesting:
            result.results.append(retest(method, splits, cfg, folder, device))
        else:
            prior_s = sum(co_teacher_cost_s(c, cfg, kind) for c in co)
            result.results.append(train_and_test(method, splits, cfg, folder, device, resume, fm_s, prior_s))
    result.wall_time_s = time.perf_counter() - t_start
    if main:
        folder.write_results(result, data, cfg.train.select_metric)
    return result


def _open_folder(
    cfg: RunConfig, folder: RunDir, methods: list[type[Method]], retesting: bool, resume: bool, device: torch.device
) -> None:
    """Rank 0 checks that the feature cache can be written (before any expensive work: a read-only cache found after
    the FM pass would lose that work) and records the run, or the re-test, in its folder; every rank logs there."""
    if distributed.is_main():
        cache = resolve_cache_dir(cfg.teacher.cache_dir)
        if cache is not None and cfg.teacher.features == "cached" and any(m.uses_teacher for m in methods):
            check_writable(cache, CACHE_SETTING)
        if retesting:
            folder.write_retest(environment(cfg))
        else:
            folder.start(cfg, environment(cfg))
    distributed.barrier()
    setup_logging(folder.path)
    log.info(
        "run folder %s%s",
        folder.path,
        " (re-testing stored checkpoints)" if retesting else " (resuming: finished epochs are kept)" if resume else "",
    )
    if distributed.world_size() > 1:
        log.info("distributed: %d processes, %s", distributed.world_size(), device)


def _load(cfg: RunConfig, folder: RunDir) -> DataBundle:
    data = load_data(cfg.data)
    for note in data.notes:
        log.info("data: %s", note)
    log.info(
        "data: %d classes %s; train %d / val %d / test %d images at %s, %d channel(s)",
        data.num_classes, data.class_names, len(data.train), len(data.val), len(data.test), data.load_size,
        data.channels,
    )  # fmt: skip
    if distributed.is_main():
        folder.write_data(data)
    return data


def _teacher_features(
    teacher: Optional[Teacher],
    datasets: dict[str, ImageDataset],
    data: DataBundle,
    pool: Optional[UnlabelledPool],
    kinds: dict[str, bool],
    cfg: RunConfig,
    device: torch.device,
    result: RunResult,
) -> dict[str, KindFeatures]:
    """Each cached feature kind the methods read, computed once (FM seconds go to ``result``); ``kinds`` says for
    each whether some method reads it batch by batch (only then are augmented views worth their FM passes).
    Under torchrun, rank 0 fills the cache first and the other ranks read it after a barrier (one FM pass in all)."""
    if teacher is None or cfg.teacher.features != "cached":
        return {}
    fm, out = FMPass.from_config(teacher, cfg, device), {}
    for kind, batches_read in kinds.items():
        t0, timings = time.perf_counter(), dict[str, float]()
        if not distributed.is_main():
            distributed.barrier()
        out[kind] = kind_features(fm, datasets, data, pool, kind, cfg, timings, views=batches_read)
        if distributed.is_main():
            distributed.barrier()
        result.fm_pass_s[kind] = sum(v for k, v in timings.items() if k != "test")
        elapsed = time.perf_counter() - t0
        result.teacher_feature_time_s += elapsed
        log.info("teacher: %s features of %d images ready in %.1fs", kind, sum(map(len, out[kind].splits.values())),
                 elapsed)  # fmt: skip
    return out
