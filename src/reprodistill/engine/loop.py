"""The one training loop every method shares: optimiser, schedule, epochs, validation, checkpoints, metrics.csv."""

from __future__ import annotations

import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from reprodistill.config import TrainConfig
from reprodistill.data.transforms import augment
from reprodistill.engine import distributed
from reprodistill.engine.budget import BudgetLog
from reprodistill.engine.distributed import GlobalBatchSampler, MixedBatchSampler, shard_indices
from reprodistill.engine.run_dir import MethodDir
from reprodistill.errors import ReprodistillError
from reprodistill.features.split import FeatureSplit
from reprodistill.losses import fit_logit_scale, scaled_nll
from reprodistill.methods.base import Method, StepOutput
from reprodistill.util.checkpoint import load_checkpoint, save_checkpoint, write_csv
from reprodistill.util.metrics import SCALAR_METRICS, classification_metrics, round_score
from reprodistill.util.progress import progress

log = logging.getLogger("reprodistill")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA if available; under torchrun each process takes the GPU of its LOCAL_RANK."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None and distributed.launched():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def class_weights(labels: np.ndarray, num_classes: int, mode: str) -> Optional[torch.Tensor]:
    """Inverse-frequency weights ``n / (K * n_c)`` for mode 'balanced', else None."""
    if mode == "none":
        return None
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    return torch.tensor(len(labels) / (num_classes * np.maximum(counts, 1)), dtype=torch.float32)


@dataclass
class FitResult:
    best_epoch: int
    best_score: float
    history: list[dict[str, float]] = field(default_factory=list)
    train_time_s: float = 0.0


def _to_device(batch: dict[str, torch.Tensor], split: FeatureSplit, device: torch.device) -> dict[str, torch.Tensor]:
    if "teacher_features" in batch:  # already chosen from the cached views
        pass
    elif split.teacher_features is not None:  # cached in fp16; compute in fp32
        batch["teacher_features"] = split.teacher_features[batch["index"]].float()
    elif split.online_teacher is not None:
        batch["teacher_features"] = split.online_teacher(batch["image"].to(device))
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _loader_kwargs(cfg: TrainConfig, device: torch.device) -> dict[str, Any]:
    return dict(
        num_workers=cfg.num_workers,
        persistent_workers=cfg.num_workers > 0,
        pin_memory=device.type == "cuda",  # page-locked host memory only helps host->GPU copies
    )


def train_loader(split: FeatureSplit, cfg: TrainConfig, device: torch.device) -> tuple[DataLoader, GlobalBatchSampler]:
    """This process's slices of seeded, per-epoch shuffled global batches of ``cfg.batch_size``."""
    spe = None if cfg.steps is None else -(-cfg.steps // cfg.epochs)  # ceil: at least `steps` steps in all
    n, rank, world = len(split.dataset), distributed.rank(), distributed.world_size()
    if split.n_labelled is not None and split.n_labelled < n:
        sampler: GlobalBatchSampler = MixedBatchSampler(
            split.n_labelled, n - split.n_labelled, cfg.batch_size, split.unlabelled_share, cfg.seed, rank, world, spe
        )
    else:
        sampler = GlobalBatchSampler(n, cfg.batch_size, cfg.seed, True, rank, world, spe)
    return DataLoader(split.dataset, batch_sampler=sampler, **_loader_kwargs(cfg, device)), sampler


# ({'model': log-probabilities [N,K], <other branch>: ...}, labels [N], task loss of the deployed model)
Predictions = tuple[dict[str, np.ndarray], np.ndarray, float]


@torch.inference_mode()
def predict(
    method: Method, split: FeatureSplit, cfg: TrainConfig, device: torch.device, extra: bool = False
) -> Predictions:
    """({'model': log-probabilities [N,K], <extra branch>: ...}, labels [N], task loss of the deployed model).

    The loss is the class-weighted cross-entropy the methods train on (weighted mean), so selecting on it selects
    on the training objective.

    Under torchrun each process scores a contiguous block of the split and the blocks are gathered, so every rank
    returns the whole split's results in order.
    """
    method.eval()
    scores: dict[str, list[np.ndarray]] = {}
    labels, loss_sum, weight_sum = [], 0.0, 0.0
    subset = Subset(split.dataset, shard_indices(len(split.dataset)))
    loader = DataLoader(subset, batch_size=cfg.batch_size, shuffle=False, **_loader_kwargs(cfg, device))
    for batch in loader:
        batch = _to_device(batch, split, device)
        logits = method.predict(batch).float()
        # the task loss as trained: class-weighted CE, normalised by the summed weights (a weighted mean)
        w = method.class_weights
        loss_sum += float(torch.nn.functional.cross_entropy(logits, batch["label"], weight=w, reduction="sum"))
        weight_sum += float(w[batch["label"]].sum()) if w is not None else float(len(batch["label"]))
        outputs = {"model": logits, **(method.extra_logits(batch) if extra else {})}
        for name, z in outputs.items():  # log-probabilities: float probabilities saturate (see util.metrics)
            scores.setdefault(name, []).append(z.double().log_softmax(-1).cpu().numpy())
        labels.append(batch["label"].cpu().numpy())
    parts = distributed.all_gather_objects((scores, labels, loss_sum, weight_sum))
    scores = {k: [a for p, _, _, _ in parts for a in p.get(k, [])] for k in parts[0][0]}
    labels = [a for _, lab, _, _ in parts for a in lab]
    loss = sum(p[2] for p in parts) / max(1e-12, sum(p[3] for p in parts))
    return {k: np.concatenate(v) for k, v in scores.items()}, np.concatenate(labels), loss


def evaluate(
    method: Method, split: FeatureSplit, cfg: TrainConfig, device: torch.device, extra: bool = False
) -> dict[str, Any]:
    """Metrics of the deployed model; with ``extra``, also of the method's other branches under 'extra'."""
    return metrics_of(predict(method, split, cfg, device, extra))


def metrics_of(predictions: Predictions) -> dict[str, Any]:
    """The metrics of :func:`predict`'s output (the deployed model's, its other branches' under 'extra')."""
    scores, labels, loss = predictions
    metrics = classification_metrics(scores["model"], labels)
    metrics["loss"] = loss
    others = {name: s for name, s in scores.items() if name != "model"}
    if others:
        metrics["extra"] = {name: classification_metrics(s, labels) for name, s in others.items()}
    return metrics


def calibration(val: Predictions, test: Predictions, class_weights: Optional[torch.Tensor]) -> dict[str, float]:
    """The deployed model's softmax temperature fitted on validation (the class-weighted CE it trained on) and that
    loss on both splits before and after; AUC and every argmax metric are unchanged by it. `export` stores it so
    `predict` reports calibrated probabilities."""
    (v_scores, v_labels, v_loss), (t_scores, t_labels, t_loss) = val, test
    v, t = torch.from_numpy(v_scores["model"]), torch.from_numpy(t_scores["model"])
    v_y, t_y = torch.from_numpy(v_labels), torch.from_numpy(t_labels)
    w = None if class_weights is None else class_weights.cpu()
    s = fit_logit_scale(v, v_y, w, max_scale=1e3)
    return {
        "temperature": 1.0 / s,
        "val_loss": v_loss,
        "val_loss_calibrated": scaled_nll(v, v_y, s, w),
        "test_loss": t_loss,
        "test_loss_calibrated": scaled_nll(t, t_y, s, w),
    }


def build_optimizer(method: Method, cfg: TrainConfig, steps_per_epoch: int):
    params = [p for p in method.parameters() if p.requires_grad]
    if not params:
        raise ReprodistillError(f"method {method.name!r} has no trainable parameters")
    # no weight decay on biases and norm scales (1-d tensors), as in timm / nanoGPT
    groups = [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]
    if cfg.optimizer == "adamw":
        # the fused kernel: on a CPU the per-tensor loop cost a resnet18 step ~140 ms against ~30 ms fused (a fifth
        # of the whole step); results differ from the loop's in the last bits only
        fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
        opt: torch.optim.Optimizer = torch.optim.AdamW(groups, lr=cfg.lr, fused=fused or None)
    else:
        opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)
    total = cfg.epochs * steps_per_epoch
    warmup = int(cfg.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.scheduler == "none":
            return 1.0
        t = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _wrap_ddp(method: Method, device: torch.device) -> torch.nn.Module:
    """DDP around the method (its trainable parts only: the frozen FM is not a submodule) under torchrun."""
    if distributed.world_size() == 1:
        return method
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(method, device_ids=ids)


@dataclass
class _Progress:
    """What a run has done so far (restored from last.pt on resume)."""

    start_epoch: int = 0
    best_score: float = -math.inf
    best_epoch: int = -1
    history: list[dict[str, float]] = field(default_factory=list)
    train_time: float = 0.0


def _resume(method: Method, opt: Any, sched: Any, aug_gen: torch.Generator, last: Path) -> _Progress:
    """Restore model, optimiser, schedule and RNG states from ``last`` (the end of its epoch)."""
    state = load_checkpoint(last)
    method.load_state_dict(state["method"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    aug_gen.set_state(state["aug_rng"])
    torch.set_rng_state(state["torch_rng"])
    log.info("%s: resumed from %s, continuing with epoch %d", method.name, last, state["epoch"] + 2)
    return _Progress(state["epoch"] + 1, state["best_score"], state["best_epoch"], state["history"],
                     state["train_time_s"])  # fmt: skip


def _views(
    method: Method, batch: dict[str, torch.Tensor], train: FeatureSplit, cfg: TrainConfig, aug_gen: torch.Generator,
    offset: int, total: int,
) -> None:  # fmt: skip
    """Add the method's extra views to ``batch`` and augment its images (or draw their cached views with the FM
    features of the same view), in the order that fixes the augmentation generator's draws."""
    raw = batch["image"]
    for name, view in method.input_views.items():  # e.g. FixMatch's strong view, from the raw images
        batch[f"image_{name}"] = view(raw, aug_gen, offset, total)
    if train.views is not None:
        batch["image"], batch["teacher_features"] = train.views.sample(
            batch["image"], batch["index"], aug_gen, offset, total
        )
    else:
        batch["image"] = augment(batch["image"], cfg.augment_shift, cfg.augment_flip, aug_gen, offset, total)


def _check_finite(method: Method, out: StepOutput, cfg: TrainConfig, epoch: int, world: int) -> None:
    """Stop with the diverged parts named when the loss is not finite (on every rank together)."""
    finite = bool(torch.isfinite(out.loss))
    if world > 1:  # every rank must stop together, or the others hang in the next all-reduce
        finite = distributed.all_reduce_sum([0.0 if finite else 1.0])[0] == 0
    if not finite:
        bad = [k for k, v in out.parts.items() if not torch.isfinite(v.detach()).all()]
        raise ReprodistillError(
            f"{method.name}: loss became {out.loss.item()} at epoch {epoch + 1} (diverged parts: {bad or ['loss']}); "
            f"lower train.lr (now {cfg.lr}) or set train.grad_clip. last.pt holds the last good epoch."
        )


def _train_round(
    method: Method, model: torch.nn.Module, loader: DataLoader, sampler: Any, train: FeatureSplit, cfg: TrainConfig,
    device: torch.device, aug_gen: torch.Generator, opt: Any, sched: Any, budget: Optional[BudgetLog], epoch: int,
) -> dict[str, float]:  # fmt: skip
    """One evaluation round of optimiser steps; returns the per-image means of the loss and every logged value."""
    main, world = distributed.is_main(), distributed.world_size()
    method.train()
    method.on_epoch_start(epoch)
    sampler.set_epoch(epoch)  # the shuffle depends on (seed, epoch) only, so a resumed epoch sees the same order
    plan = sampler.plan()
    sums: dict[str, float] = {}
    n_seen = 0.0
    # a bar on a terminal, else a log line with rate and time left every 30 s of a long round (rank 0 only)
    desc = f"{method.name} round {epoch + 1}/{cfg.epochs}"
    steps = progress(loader, desc, len(plan), "step", every_tenth=False) if main else loader
    for step, batch in enumerate(steps):
        _, offset, total = plan[step]
        _views(method, batch, train, cfg, aug_gen, offset, total)
        batch = _to_device(batch, train, device)
        b = len(batch["label"])
        method.progress = (epoch + step / len(plan)) / cfg.epochs  # for schedules that decay in training
        out: StepOutput = model(batch)
        _check_finite(method, out, cfg, epoch, world)
        opt.zero_grad(set_to_none=True)
        # DDP averages gradients over ranks; weighting each slice by its share makes that the global-batch mean
        (out.loss * (b * world / total) if world > 1 else out.loss).backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(method.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        method.after_step()
        n_seen += b
        sums["loss"] = sums.get("loss", 0.0) + out.loss.item() * b
        for k, v in out.log_values().items():  # unweighted parts, their weights (w_<part>), other values
            sums[k] = sums.get(k, 0.0) + v * b
        if budget is not None:
            budget.step((cfg.epochs - epoch) * len(plan) - step - 1)
    if world > 1:
        keys = sorted(sums)
        *values, n_seen = distributed.all_reduce_sum([sums[k] for k in keys] + [float(n_seen)])
        sums = dict(zip(keys, values, strict=True))
    return {k: v / n_seen for k, v in sums.items()}


def _end_round(
    method: Method, val: FeatureSplit, cfg: TrainConfig, device: torch.device, folder: MethodDir, done: _Progress,
    means: dict[str, float], epoch: int, t0: float, states: dict[str, Any],
) -> None:  # fmt: skip
    """Validate, record the round in ``done`` and metrics.csv, and write best.pt / last.pt (rank 0)."""
    main = distributed.is_main()
    done.train_time += time.perf_counter() - t0
    val_metrics = evaluate(method, val, cfg, device)
    row = {
        "epoch": epoch + 1,
        **{f"train_{k}": v for k, v in means.items()},
        "val_loss": val_metrics["loss"],
        **{f"val_{k}": val_metrics[k] for k in SCALAR_METRICS},
        "lr": states["optimizer"].param_groups[0]["lr"],
        "epoch_time_s": time.perf_counter() - t0,
    }
    done.history.append(row)
    method.after_validation(val_metrics)
    score = round_score(val_metrics, cfg.select_metric, epoch + 1)  # the same on every rank: val is gathered
    if score > done.best_score:
        done.best_score, done.best_epoch = score, epoch + 1
        if main:
            save_checkpoint(folder.best, {"method": method.state_dict(), "epoch": epoch, "score": score})
    if main:
        save_checkpoint(
            folder.last,
            {
                "method": method.state_dict(),
                "optimizer": states["optimizer"].state_dict(),
                "scheduler": states["scheduler"].state_dict(),
                "aug_rng": states["aug_rng"].get_state(),
                "torch_rng": torch.get_rng_state(),
                "epoch": epoch,
                "best_score": done.best_score,
                "best_epoch": done.best_epoch,
                "history": done.history,
                "train_time_s": done.train_time,
            },
        )
        write_csv(folder.metrics_csv, done.history)
    distributed.barrier()  # no rank reads best.pt / last.pt before rank 0 has written them
    log.info(
        "%s epoch %d/%d: train loss %.4f | val acc %.4f bal-acc %.4f auc %.4f | %.1fs",
        method.name,
        epoch + 1,
        cfg.epochs,
        row["train_loss"],
        val_metrics["accuracy"],
        val_metrics["balanced_accuracy"],
        val_metrics["auc"],
        row["epoch_time_s"],
    )


def fit(
    method: Method,
    train: FeatureSplit,
    val: FeatureSplit,
    cfg: TrainConfig,
    out_dir: Path,
    device: torch.device,
    resume: bool = True,
) -> FitResult:
    """Train ``method`` for ``cfg.epochs``; write metrics.csv, last.pt (resumable) and best.pt into ``out_dir``.

    With ``resume`` and an existing last.pt, training continues after its epoch with optimiser, schedule and
    RNG states restored.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    loader, sampler = train_loader(train, cfg, device)
    opt, sched = build_optimizer(method, cfg, len(sampler))
    model = _wrap_ddp(method, device)
    aug_gen = torch.Generator().manual_seed(cfg.seed + 1)
    folder = MethodDir(out_dir)
    done = _resume(method, opt, sched, aug_gen, folder.last) if resume and folder.last.exists() else _Progress()
    n_lab = train.n_labelled if train.n_labelled is not None else len(train.dataset)
    budget = BudgetLog(
        method.name, cfg, len(sampler), n_lab, len(train.dataset) - n_lab, train.unlabelled_share,
        method.student.spec.size if method.uses_student else None,
    ) if distributed.is_main() and done.start_epoch < cfg.epochs else None  # fmt: skip
    states = {"optimizer": opt, "scheduler": sched, "aug_rng": aug_gen}
    for epoch in range(done.start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        means = _train_round(method, model, loader, sampler, train, cfg, device, aug_gen, opt, sched, budget, epoch)
        _end_round(method, val, cfg, device, folder, done, means, epoch, t0, states)
    return FitResult(done.best_epoch, done.best_score, done.history, done.train_time)
