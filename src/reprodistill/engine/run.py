"""A run: build data and teacher once, train and test every configured method, write the run folder.

Run folder layout::

    runs/<time>-<name>/
      config.yaml  env.json  log.txt  results.csv  results.md
      <method>/metrics.csv  best.pt  last.pt  test_metrics.json
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import math
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import yaml

from reprodistill import __version__
from reprodistill.config import RunConfig, to_dict
from reprodistill.data import ImageDataset, load_data
from reprodistill.data.sources import DataBundle, UnlabelledPool
from reprodistill.engine import distributed
from reprodistill.engine.loop import (
    FeatureSplit,
    FitResult,
    class_weights,
    evaluate,
    fit,
    resolve_device,
    seed_everything,
)
from reprodistill.engine.metrics import SCALAR_METRICS, selection_rule_text
from reprodistill.engine.profile import count_params, flops, latency_ms, peak_rss_mb
from reprodistill.engine.sanity import flag_text, majority_metrics, prediction_flags, published_line
from reprodistill.errors import ReprodistillError
from reprodistill.features.cache import CACHE_SETTING, cached_features, check_writable, resolve_cache_dir
from reprodistill.features.extract import extract_features
from reprodistill.features.views import AugmentedView, CachedViews, view_id
from reprodistill.methods import METHODS, Method, MethodContext
from reprodistill.models import create_student, create_teacher
from reprodistill.models.teacher import Teacher
from reprodistill.util.checkpoint import load_checkpoint, read_json, save_checkpoint, write_json, write_text
from reprodistill.util.lock import FolderLock

log = logging.getLogger("reprodistill")


@dataclass
class MethodResult:
    method: str
    test: dict[str, Any]
    best_epoch: int
    train_time_s: float
    params: int
    gflops: float
    latency_ms: float
    peak_rss_mb: float
    # seconds of the FM pass over train+val that this method's cached features cost (0 for the student alone)
    fm_feature_s: float = 0.0
    # seconds of the method's own work before training (a probe fit, TDMR's stage 1, LoRA's trunk pass), counted
    # as when first done even if this run loaded its stored result
    prepare_s: float = 0.0
    # validation metrics of the reported checkpoint (the split that chose it; 'loss' is the class-weighted CE)
    val: dict[str, float] = field(default_factory=dict)


@dataclass
class RunResult:
    run_dir: Path
    results: list[MethodResult] = field(default_factory=list)
    wall_time_s: float = 0.0
    teacher_feature_time_s: float = 0.0
    # kind -> seconds of the FM pass over train+val (measured now or when the cache entry was made)
    fm_pass_s: dict[str, float] = field(default_factory=dict)


def git_sha() -> Optional[str]:
    try:
        return (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        return None


def new_run_dir(cfg: RunConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(cfg.out_dir) / f"{stamp}-{cfg.name or 'run'}"
    path, i = base, 1
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    return path


def setup_logging(run_dir: Path) -> None:
    """Log to stderr (INFO) and always to run_dir/log.txt; under torchrun other ranks than 0 log warnings only."""
    logger = logging.getLogger("reprodistill")
    main = distributed.is_main()
    logger.setLevel(logging.INFO if main else logging.WARNING)
    for h in list(logger.handlers):
        if getattr(h, "_reprodistill", False):
            logger.removeHandler(h)
            h.close()
    prefix = "" if main else f"[rank {distributed.rank()}] "
    fmt = logging.Formatter(f"%(asctime)s %(levelname)s {prefix}%(message)s", "%H:%M:%S")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if main:
        handlers.append(logging.FileHandler(run_dir / "log.txt"))
    for h in handlers:
        h.setFormatter(fmt)
        h._reprodistill = True  # type: ignore[attr-defined]
        logger.addHandler(h)
    logger.propagate = False


def teacher_precision(precision: str, device: torch.device) -> str:
    """Resolve 'auto': bf16 autocast on a bf16-capable GPU, fp32 elsewhere (exact features on CPU)."""
    if precision != "auto":
        return precision
    return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"


def build_teacher(cfg: RunConfig, device: torch.device) -> Teacher:
    """The frozen FM of ``cfg`` on ``device`` with its precision and compile settings applied."""
    log.info("teacher: building %s", cfg.teacher.name)
    teacher = create_teacher(cfg.teacher).to(device)
    teacher.configure(teacher_precision(cfg.teacher.precision, device), cfg.teacher.compile)
    log.info("teacher: %s, %.1fM params, input %s", teacher.name, count_params(teacher) / 1e6, teacher.spec.describe())
    return teacher


def _environment(cfg: RunConfig) -> dict[str, Any]:
    import numpy
    import timm

    return {
        "reprodistill": __version__,
        "git_sha": git_sha(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
        "seed": cfg.train.seed,
    }


def _measure_deployed(method: Method, device: torch.device) -> tuple[int, float, float]:
    """(params, GFLOPs per image, CPU-batch-1 latency in ms) of what the method deploys."""
    model, spec = method.deployed(), method.deployed_spec()
    x = torch.zeros(1, spec.channels, *spec.size, device=device)
    was_training = method.training
    method.eval()
    result = count_params(model), flops(model, x) / 1e9, latency_ms(model, x)
    method.train(was_training)
    return result


def _teacher_features(
    teacher: Teacher,
    datasets: dict[str, ImageDataset],
    kind: str,
    cfg: RunConfig,
    device: torch.device,
    timings: dict[str, float],
) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    """Fixed-view teacher features of every split and the extra augmented views of the train split
    (``teacher.views - 1`` of them), from the on-disk cache when possible; FM seconds go to ``timings``.

    Under torchrun, rank 0 fills the cache first and the other ranks read it after a barrier (one FM pass in all).
    """
    if not distributed.is_main():
        distributed.barrier()
    shift, flip = cfg.train.augment_shift, cfg.train.augment_flip

    def get(name: str, ds: ImageDataset, k: int = 0) -> torch.Tensor:
        source = ds if k == 0 else AugmentedView(ds, k, shift, flip)
        label = name if k == 0 else f"{name}-view{k}"
        return cached_features(
            teacher,
            ds,
            cfg.teacher.cache_dir,
            kind=kind,
            name=label,
            timings=timings,
            view=view_id(k, shift, flip),
            compute=lambda: extract_features(
                teacher,
                source,
                cfg.teacher.batch_size,
                device,
                kind=kind,
                desc=f"{teacher.name} {kind} {label}",
                num_workers=cfg.train.num_workers,
            ),
        )

    feats = {name: get(name, ds) for name, ds in datasets.items()}
    views = [get("train", datasets["train"], k) for k in range(1, cfg.teacher.views)]
    if distributed.is_main():
        distributed.barrier()
    return feats, views


def _split_features(
    teacher: Teacher,
    datasets: dict[str, ImageDataset],
    data: DataBundle,
    pool: Optional[UnlabelledPool],
    kind: str,
    cfg: RunConfig,
    device: torch.device,
    timings: dict[str, float],
) -> tuple[dict[str, torch.Tensor], Optional[CachedViews], Optional[CachedViews]]:
    """({split: fixed-view features}, train views, labelled + unlabelled views) of one feature kind.

    With unlabelled images the FM pass covers the whole training split once (one cache entry, shared by every
    fraction and seed) and is sliced into the labelled ('train') and 'unlabelled' parts.
    """
    shift, flip = cfg.train.augment_shift, cfg.train.augment_flip
    if pool is None:
        feats, extra = _teacher_features(teacher, datasets, kind, cfg, device, timings)
        return feats, CachedViews([feats["train"], *extra], shift, flip) if extra else None, None
    full = {**datasets, "train": ImageDataset(pool.full_train, data.channels, data.load_size)}
    feats, extra = _teacher_features(teacher, full, kind, cfg, device, timings)
    every = [feats["train"], *extra]
    labelled = [v[pool.labelled_index] for v in every]
    unlabelled = [v[pool.unlabelled_index] for v in every]
    feats["train"], feats["unlabelled"] = labelled[0], unlabelled[0]
    if not extra:
        return feats, None, None
    mixed = [torch.cat(pair) for pair in zip(labelled, unlabelled)]
    return feats, CachedViews(labelled, shift, flip), CachedViews(mixed, shift, flip)


def _with_unlabelled(
    train: FeatureSplit,
    data: DataBundle,
    pool: UnlabelledPool,
    kind_feats: Optional[dict[str, torch.Tensor]],
    views: Optional[CachedViews],
    share: float,
) -> FeatureSplit:
    """The training split followed by the unlabelled images (labels hidden), with their cached features."""
    ds = ImageDataset(data.train.concat(pool.split), data.channels, data.load_size)
    features = None if not kind_feats else torch.cat([kind_feats["train"], kind_feats["unlabelled"]])
    return FeatureSplit(ds, features, train.online_teacher, views, n_labelled=len(data.train), unlabelled_share=share)


def results_table(results: list[MethodResult], majority: Optional[dict[str, Any]] = None) -> str:
    """Markdown table of the test metrics and deployment cost of each method, with the majority-class row and a
    flag on any method whose predictions are (nearly) one class."""
    head = "| method | test acc | bal. acc | macro-F1 | AUC | params (M) | GFLOPs | latency (ms) | train (s) | flags |"
    lines = [head, "|---|" + "---:|" * (head.count("|") - 3) + "---|"]
    for r in results:
        t = r.test
        flags = flag_text(t["confusion_matrix"])
        lines.append(
            f"| {r.method} | {t['accuracy']:.4f} | {t['balanced_accuracy']:.4f} | {t['macro_f1']:.4f} | "
            f"{t['auc']:.4f} | {r.params / 1e6:.2f} | {r.gflops:.3f} | {r.latency_ms:.1f} | {r.train_time_s:.0f} | "
            f"{flags} |"
        )
    if majority is not None:
        m = majority
        lines.append(
            f"| *majority class* | {m['accuracy']:.4f} | {m['balanced_accuracy']:.4f} | {m['macro_f1']:.4f} | "
            f"{m['auc']:.4f} | | | | | reference |"
        )
    return "\n".join(lines)


def _write_results(run_dir: Path, res: RunResult, data: DataBundle, select: str) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(
        ["method", *SCALAR_METRICS, "flags", "val_loss", *(f"val_{k}" for k in SCALAR_METRICS), "best_epoch",
         "train_time_s", "params", "gflops", "latency_ms", "peak_rss_mb"]
    )  # fmt: skip
    for r in res.results:
        w.writerow(
            [
                r.method,
                *(r.test[k] for k in SCALAR_METRICS),
                flag_text(r.test["confusion_matrix"]),
                r.val.get("loss", ""),
                *(r.val.get(k, "") for k in SCALAR_METRICS),
                r.best_epoch,
                f"{r.train_time_s:.2f}",
                r.params,
                f"{r.gflops:.4f}",
                f"{r.latency_ms:.2f}",
                f"{r.peak_rss_mb:.0f}",
            ]
        )
    write_text(run_dir / "results.csv", buf.getvalue())
    md = [
        f"# reprodistill run {run_dir.name}",
        "",
        f"Data: {data.source} — train {len(data.train)}, val {len(data.val)}, test {len(data.test)}; "
        f"classes {data.class_names}",
        "",
        results_table(
            res.results,
            majority_metrics(
                np.bincount(data.train.labels, minlength=data.num_classes),
                np.bincount(data.test.labels, minlength=data.num_classes),
            ),
        ),
        "",
        published_line(data.source),
        "",
        f"Reported checkpoint of each method: best.pt, {selection_rule_text(select)} (never the test split); "
        "export and predict use the same one.",
        "",
        f"Wall time {res.wall_time_s:.0f} s (teacher features {res.teacher_feature_time_s:.0f} s); "
        f"peak RSS {peak_rss_mb():.0f} MB.",
    ]
    write_text(run_dir / "results.md", "\n".join(md) + "\n")


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'train': {'epochs': 5}} -> {'train.epochs': 5}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _check_run_dir(run_dir: Path, cfg: RunConfig) -> bool:
    """True if ``run_dir`` holds a run started with this same config (so it is resumed); a run folder is never
    overwritten with different settings."""
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        return False
    old, new = _flatten(yaml.safe_load(saved.read_text())), _flatten(to_dict(cfg))
    defaults = _flatten(to_dict(RunConfig()))
    # a key added to reprodistill after the run started is no change if this run leaves it at its default
    changed = sorted(
        k for k in set(old) | set(new) if old.get(k) != new.get(k) and not (k not in old and new[k] == defaults.get(k))
    )
    if changed:
        raise ReprodistillError(
            f"{run_dir} already holds a run with a different config (changed: {changed}); "
            "rerun with the original settings to resume it, or pick a new --run-dir"
        )
    return True


def run(
    cfg: RunConfig, run_dir: Optional[Path] = None, resume: bool = False, teacher: Optional[Teacher] = None
) -> RunResult:
    """Train and test every method of ``cfg`` on the same data, splits and budget; return their results.

    An existing ``run_dir`` started with the same config is resumed from each method's last.pt; methods that had
    finished are kept, not retrained. ``teacher`` reuses an FM already built from ``cfg.teacher`` (bench cells).
    The run folder is locked while this runs: a second process on the same folder stops with a clear message.
    """
    device = resolve_device(cfg.train.device)
    distributed.init(device)
    # every rank must use rank 0's folder (a new folder's name has a time stamp)
    run_dir = distributed.broadcast_object(Path(run_dir) if run_dir else new_run_dir(cfg))
    if not distributed.is_main():
        return _run(cfg, run_dir, resume, teacher, device)
    check_writable(run_dir, "--run-dir (or out_dir)")
    with FolderLock(run_dir):
        return _run(cfg, run_dir, resume, teacher, device)


def _run(cfg: RunConfig, run_dir: Path, resume: bool, teacher: Optional[Teacher], device: torch.device) -> RunResult:
    t_start = time.perf_counter()
    main = distributed.is_main()
    resume = _check_run_dir(run_dir, cfg) or resume
    distributed.barrier()  # every rank has read the old config before rank 0 rewrites it
    if main:  # before any expensive work: a read-only folder found after the FM pass would lose that work
        cache = resolve_cache_dir(cfg.teacher.cache_dir)
        uses_cache = cfg.teacher.features == "cached" and any(METHODS.get(m).uses_teacher for m in cfg.methods)
        if cache is not None and uses_cache:
            check_writable(cache, CACHE_SETTING)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text(run_dir / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
        write_json(run_dir / "env.json", {**_environment(cfg), "world_size": distributed.world_size()})
    distributed.barrier()
    setup_logging(run_dir)
    log.info("run folder %s%s", run_dir, " (resuming: finished epochs are kept)" if resume else "")
    if distributed.world_size() > 1:
        log.info("distributed: %d processes, %s", distributed.world_size(), device)

    data = load_data(cfg.data)
    for note in data.notes:
        log.info("data: %s", note)
    log.info(
        "data: %d classes %s; train %d / val %d / test %d images at %s, %d channel(s)",
        data.num_classes,
        data.class_names,
        len(data.train),
        len(data.val),
        len(data.test),
        data.load_size,
        data.channels,
    )
    if main:
        write_json(
            run_dir / "data.json",
            {
                "source": data.source,
                "class_names": data.class_names,
                "channels": data.channels,
                "load_size": list(data.load_size),
                "sizes": {s: len(getattr(data, s)) for s in ("train", "val", "test")},
                "unlabelled": 0 if data.unlabelled is None else len(data.unlabelled.split),
                "class_counts": {
                    s: np.bincount(getattr(data, s).labels, minlength=data.num_classes).tolist()
                    for s in ("train", "val", "test")
                },
            },
        )
    datasets = {s: ImageDataset(getattr(data, s), data.channels, data.load_size) for s in ("train", "val", "test")}
    methods = [METHODS.get(m) for m in cfg.methods]
    pool = data.unlabelled
    if pool is not None and not any(m.uses_unlabelled for m in methods):
        log.info("data: no method of %s uses unlabelled images; they are left out", cfg.methods)
        pool = None
    if pool is not None:
        log.info(
            "data: %s train on %d labelled + %d unlabelled images (%.0f%% of each batch unlabelled); the others on "
            "the labelled images only",
            [m.name for m in methods if m.uses_unlabelled],
            len(data.train),
            len(pool.split),
            100 * cfg.data.unlabelled_share,
        )

    result = RunResult(run_dir=run_dir)
    feats: dict[str, dict[str, torch.Tensor]] = {}  # kind -> split -> features
    views: dict[str, Optional[CachedViews]] = {}  # kind -> augmented views of the train split (teacher.views > 1)
    mixed_views: dict[str, Optional[CachedViews]] = {}  # kind -> the same for the labelled + unlabelled images
    if teacher is None and any(m.uses_teacher for m in methods):
        teacher = build_teacher(cfg, device)
    if teacher is not None and main:  # what the FM saw: its preprocessing record and the pooled-feature layout
        write_json(
            run_dir / "teacher.json",
            {
                "name": teacher.name,
                "identity": teacher.identity,
                "preprocessing": teacher.spec.describe(),
                "pooled_dim": teacher.feature_dim,
                "pool_layers": list(teacher.pool_layers),
            },
        )
    kinds = dict.fromkeys(m.teacher_features for m in methods if m.teacher_features)
    for kind in kinds if cfg.teacher.features == "cached" else []:
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        feats[kind], views[kind], mixed_views[kind] = _split_features(
            teacher, datasets, data, pool, kind, cfg, device, timings
        )
        result.fm_pass_s[kind] = sum(v for k, v in timings.items() if k != "test")
        elapsed = time.perf_counter() - t0
        result.teacher_feature_time_s += elapsed
        n = sum(len(f) for f in feats[kind].values())
        log.info("teacher: %s features of %d images ready in %.1fs", kind, n, elapsed)

    weights = class_weights(data.train.labels, data.num_classes, cfg.train.class_weights)
    for method_cls in methods:
        seed_everything(cfg.train.seed)
        student = create_student(cfg.student, data.num_classes, data.load_size) if method_cls.uses_student else None
        ctx = MethodContext(
            cfg=cfg,
            num_classes=data.num_classes,
            student=student,
            teacher=teacher if method_cls.uses_teacher else None,
            class_weights=None if weights is None else weights.to(device),
        )
        method = method_cls(ctx, method_cls.parse_options(cfg.method_options.get(method_cls.name))).to(device)
        kind = method_cls.teacher_features
        online = None
        if kind and cfg.teacher.features == "online":
            online = teacher.features if kind == "pooled" else teacher.feature_maps
        splits = {s: FeatureSplit(datasets[s], feats.get(kind, {}).get(s), online) for s in datasets}
        splits["train"].views = views.get(kind)
        if pool is not None and method_cls.uses_unlabelled:
            splits["train"] = _with_unlabelled(
                splits["train"], data, pool, feats.get(kind), mixed_views.get(kind), cfg.data.unlabelled_share
            )
        out = run_dir / method_cls.name
        done = out / "result.json"
        if resume and done.is_file():  # finished before this run was interrupted: keep it, do not retrain
            saved = read_json(done)
            result.results.append(MethodResult(**saved))
            log.info("%s: already finished in %s, kept", method_cls.name, out)
            continue
        log.info(
            "%s: training (%d trainable params)",
            method_cls.name,
            sum(p.numel() for p in method.parameters() if p.requires_grad),
        )
        t_prep = time.perf_counter()
        method.prepare(splits["train"], device, val=splits["val"])
        prepare_s = method.prepare_s if method.prepare_s is not None else time.perf_counter() - t_prep
        if method_cls.loop_training:
            fitted = fit(method, splits["train"], splits["val"], cfg.train, out, device, resume=resume)
        else:  # prepare() solved it (e.g. a converged probe): that state is the result
            fitted = FitResult(best_epoch=0, best_score=math.nan)
            if main:
                out.mkdir(parents=True, exist_ok=True)
                save_checkpoint(out / "best.pt", {"method": method.state_dict(), "epoch": -1, "score": math.nan})
            distributed.barrier()
        method.load_state_dict(load_checkpoint(out / "best.pt")["method"])
        val = evaluate(method, splits["val"], cfg.train, device)
        test = evaluate(method, splits["test"], cfg.train, device, extra=True)
        test["best_epoch"] = fitted.best_epoch
        if main:
            write_json(out / "test_metrics.json", test)
        params, gflops, lat = _measure_deployed(method, device)
        method_result = MethodResult(
            method_cls.name,
            test,
            fitted.best_epoch,
            fitted.train_time_s,
            params,
            gflops,
            lat,
            peak_rss_mb(),
            result.fm_pass_s.get(kind, 0.0) if kind else 0.0,
            prepare_s,
            {k: val[k] for k in ("loss", *SCALAR_METRICS)},
        )
        result.results.append(method_result)
        if main:
            write_json(done, dataclasses.asdict(method_result))
            if not cfg.train.keep_last:  # finished: resume needs result.json only; optimizer state is ~100 MB+
                (out / "last.pt").unlink(missing_ok=True)
        distributed.barrier()
        log.info(
            "%s: test acc %.4f bal-acc %.4f macro-F1 %.4f AUC %.4f (best epoch %d)",
            method_cls.name,
            test["accuracy"],
            test["balanced_accuracy"],
            test["macro_f1"],
            test["auc"],
            fitted.best_epoch,
        )
        for flag in prediction_flags(test["confusion_matrix"]):
            log.warning("%s: %s on the test split: a degenerate predictor, not a result", method_cls.name, flag)
        for branch, m in test.get("extra", {}).items():
            log.info(
                "%s: %s branch (not deployed): test acc %.4f bal-acc %.4f AUC %.4f",
                method_cls.name,
                branch,
                m["accuracy"],
                m["balanced_accuracy"],
                m["auc"],
            )
    result.wall_time_s = time.perf_counter() - t_start
    if main:
        _write_results(run_dir, result, data, cfg.train.select_metric)
    return result
