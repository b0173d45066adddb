"""`tdmr`: Task-Driven Model Reprogramming (Xu et al., arXiv 2304.02263): reprogram the frozen FM into a proxy
space for the task, then distil it into the student progressively.

Stage 1 (in :meth:`prepare`, before the shared loop trains the student;
:class:`~reprodistill.reprogram.reprogrammed_fm.ReprogrammedFM` and its ``fit``): a visual prompt in the FM's
pixel space (:class:`~reprodistill.reprogram.prompt.VisualPrompt`; padding frame by default) feeds the frozen FM;
a projection head maps its pooled features into a ``proxy_dim`` proxy space and a linear classifier scores the task
there. Only prompt, projection and classifier train (AdamW, class-weighted CE). First the projection and classifier are
warmed up for ``stage1_head_epochs`` on the FM features of the images under the initial prompt (one FM forward pass,
no backward; without the warm-up, the few steps that an FM backward per image allows leave a from-scratch head far
from converged, and the reprogrammed FM would lose to a plain linear probe for that reason alone). Then all three
train jointly for ``stage1_epochs`` passes over the training split but at most ``stage1_max_steps`` steps,
gradients through the frozen FM to the prompt. Then the reprogrammed
FM's proxy features and logits of the fixed view of every training image are computed once and kept, so stage 2
runs at student cost. Stage 1 is the expensive part (an FM forward and backward per image), so its result is
stored in the feature cache directory under a key of everything it depends on (FM, training split, seed, stage-1
options, class weights): a resumed run, a rerun, or an ablation that changes only stage 2 (``schedule``, weights,
temperatures) loads it instead of training it again. The student is not part of the key, so runs that compare
students with the same seed distil from the same reprogrammed FM.

Stage 2 (the shared loop): the student's pooled features pass a linear projector into the proxy space and

    L = w_feat(p) * (1 - cos(proj(f_s), z_proxy)) + w_kd(p) * T(p)^2 KL(p_t || p_s) + w_ce(p) * CE(student)

with p the fraction of training done. Schedules (the paper's is not public):
- ``progressive`` (default): w_feat = 1 - p, w_kd = p, w_ce = p, T anneals linearly from ``t_start`` to ``t_end``;
  the student first learns the proxy geometry, then the reprogrammed FM's decisions and the labels.
- ``stepwise``: thirds: features only, then KD, then KD + CE.
- ``constant``: all weights 1 and T = t_start throughout (the ablation without a schedule).
Options beyond the defaults: ``resize=learnable`` (the image's scale on the prompt canvas trains too), and
``output=label_map`` for FMs with their own class head (e.g. ImageNet EfficientNet-Lite0): stage 1 then scores
the task with the FM's head through a greedy one-to-one label mapping, ``label_map=iterative`` (ILM: re-mapped with
the current prompt at every stage-1 epoch) or ``frequency`` (FLM: mapped once, from the initial prompt), only the
prompt trains, and the proxy space is the FM's standardised feature space.
Ablations: ``prompt=none`` (no input reprogramming; stage 1 then trains on the cached fixed-view FM features, the
same ones the linear probe reads), ``proxy=none``
(no projection: the proxy space is the FM's feature space).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Subset

from reprodistill.features.cache import cache_key, resolve_cache_dir
from reprodistill.features.split import FeatureSplit
from reprodistill.losses import kd_loss
from reprodistill.methods.base import Batch, Method, MethodContext, StepOutput, register_method
from reprodistill.reprogram.reprogrammed_fm import ReprogrammedFM, Stage1Budget, ValidationSet
from reprodistill.util.checkpoint import load_checkpoint, save_checkpoint

log = logging.getLogger("reprodistill")
# 2: stage 1 keeps its best state on validation (the warm-up included), not the last joint step
STAGE1_FORMAT = 2
# options that change what stage 1 produces (the rest only shape stage 2)
STAGE1_OPTIONS = ("prompt", "pad", "resize", "output", "label_map", "proxy", "proxy_dim", "stage1_head_epochs",
                  "stage1_epochs", "stage1_max_steps", "stage1_lr", "stage1_batch_size")  # fmt: skip


@dataclass
class TDMROptions:
    prompt: Literal["padding", "additive", "none"] = "padding"
    pad: Optional[int] = None
    resize: Literal["fixed", "learnable"] = "fixed"
    output: Literal["projection", "label_map"] = "projection"
    label_map: Literal["iterative", "frequency"] = "iterative"
    proxy: Literal["auto", "linear", "none"] = "auto"  # auto: linear for output=projection, none for label_map
    proxy_dim: int = 256
    stage1_head_epochs: int = 30
    stage1_epochs: int = 5
    stage1_max_steps: Optional[int] = None
    stage1_lr: float = 1e-3
    stage1_batch_size: int = 64
    schedule: Literal["progressive", "stepwise", "constant"] = "progressive"
    t_start: float = 4.0
    t_end: float = 1.0
    feature_weight: float = 1.0
    kd_weight: float = 1.0
    ce_weight: float = 1.0


def schedule_weights(schedule: str, p: float, t_start: float, t_end: float) -> dict[str, float]:
    """Loss weights and temperature at training progress ``p`` in [0, 1]."""
    p = min(max(p, 0.0), 1.0)
    if schedule == "constant":
        return {"feat": 1.0, "kd": 1.0, "ce": 1.0, "T": t_start}
    if schedule == "stepwise":
        phase = min(2, int(p * 3))
        w = [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 1.0, 1.0)][phase]
        return {"feat": w[0], "kd": w[1], "ce": w[2], "T": t_start}
    if schedule == "progressive":
        return {"feat": 1.0 - p, "kd": p, "ce": p, "T": t_start + (t_end - t_start) * p}
    raise ValueError(f"unknown schedule {schedule!r}")


@register_method("tdmr")
class TaskDrivenModelReprogramming(Method):
    family = "transfer"
    uses_teacher = True
    # stage 1 trains on the labelled images; with data.unlabelled, stage 2's feature and KD terms also use the
    # reprogrammed FM's outputs on the unlabelled ones (CE skips them)
    uses_unlabelled = True
    Options = TDMROptions
    caveat = (
        "not recommended over rd: with data.unlabelled (10% labels, each row's budget chosen on validation, 3 seeds) "
        "it beats the student alone on both BreastMNIST (+0.050 AUC [+0.009, +0.091]) and PneumoniaMNIST (+0.015 "
        "[+0.011, +0.019]) but not rd-unl: level on BreastMNIST (+0.005 [-0.111, +0.122]), lower on PneumoniaMNIST "
        "(-0.012 [-0.032, +0.008]), where its reprogrammed FM (test AUC 0.92) stays below RD's branch on the same FM "
        "(0.96); rd's function-matching and co-teacher rows are further ahead; deploy rd. Without the prompt "
        "(prompt=none, 5 seeds at 300 steps) its PneumoniaMNIST student reaches +0.015 [+0.001, +0.028] over the "
        "student but its BreastMNIST one falls: validation picks a different prompt on each data set"
    )
    loss_weights = ("feature_weight", "kd_weight", "ce_weight")
    # stage 2 reads its stage-1 targets by index, never the FM's features of a batch
    reads_batch_features = False

    proxy_train: torch.Tensor  # a buffer
    logits_train: torch.Tensor  # a buffer

    @classmethod
    def feature_kind(cls, options: TDMROptions) -> Optional[str]:
        """Without a prompt nothing before the FM trains: stage 1 reads the engine's cached pooled features, the
        full-training-split pass the other methods share (with unlabelled images too), instead of its own pass."""
        return "pooled" if options.prompt == "none" else None

    def __init__(self, ctx: MethodContext, options: TDMROptions) -> None:
        super().__init__(ctx, options)
        o = options
        self.reprogrammed = ReprogrammedFM(
            self.teacher, ctx.num_classes, o.prompt, o.pad, o.resize, o.output, o.label_map, o.proxy, o.proxy_dim
        )
        d_p = self.reprogrammed.proxy_dim
        self.student_projector = nn.Linear(self.student.feature_dim, d_p)
        self.register_buffer("proxy_train", torch.zeros(0, d_p), persistent=False)
        self.register_buffer("logits_train", torch.zeros(0, ctx.num_classes), persistent=False)
        self._reused_fm_pass_s = 0.0  # seconds of an FM pass that stage 1 read from the feature cache

    # ---- stage 1: reprogram the frozen FM ---------------------------------------------------------------------
    def stage1_cache_path(self, train: Any) -> Optional[Path]:
        """Where this run's stage-1 result is stored (None when the feature cache is off)."""
        cfg = self.ctx.cfg
        if not cfg.teacher.cache_dir:
            return None
        desc = {
            "fm_and_data": cache_key(self.teacher, train.dataset, "tdmr-stage1"),
            "options": {k: v for k, v in asdict(self.options).items() if k in STAGE1_OPTIONS},
            "seed": cfg.train.seed,
            "class_weights": None if self.class_weights is None else self.class_weights.tolist(),
            "label_smoothing": cfg.train.label_smoothing,
            "format": STAGE1_FORMAT,
        }
        key = hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:32]
        folder = resolve_cache_dir(cfg.teacher.cache_dir)
        return None if folder is None else folder / f"tdmr-stage1-{key}.pt"

    def _stage1_state(self) -> dict[str, Any]:
        return {"modules": [m.state_dict() for m in self.reprogrammed.parts()], "proxy_train": self.proxy_train,
                "logits_train": self.logits_train, "curve": self.reprogrammed.curve}  # fmt: skip

    def prepare(self, train: FeatureSplit, device: torch.device, val: Optional[FeatureSplit] = None) -> None:
        """Stage 1, or its stored result when the same stage 1 ran before (deterministic, so resume-safe)."""
        path = self.stage1_cache_path(train)
        if path is not None and path.is_file():
            state = load_checkpoint(path)
            for m, sd in zip(self.reprogrammed.parts(), state["modules"]):
                m.load_state_dict(sd)
            self.proxy_train, self.logits_train = state["proxy_train"].to(device), state["logits_train"].to(device)
            self.prepare_s = state.get("compute_seconds")
            self.reprogrammed.curve = state.get("curve", [])
            self.reprogrammed.steps = 0
            self.reprogrammed.freeze()
            log.info("tdmr: stage 1 loaded from %s", path)
            return
        t0 = time.perf_counter()
        self.train_stage1(train, device, val)
        # cost of this stage 1: its wall time, plus the FM pass it read from the feature cache (prompt=none)
        self.prepare_s = time.perf_counter() - t0 + self._reused_fm_pass_s
        if path is not None:
            state = {k: v.cpu() if torch.is_tensor(v) else v for k, v in self._stage1_state().items()}
            state["compute_seconds"] = self.prepare_s
            save_checkpoint(path, state)

    def prepare_curve(self) -> list[dict[str, float]]:
        """Stage 1's validation curve: after the head warm-up (epoch 0) and each joint epoch."""
        return self.reprogrammed.curve

    def _fixed_features(self, split: FeatureSplit, name: str, device: torch.device) -> torch.Tensor:
        """Fixed-view pooled FM features of ``split``: the engine's (its FM pass is counted with the run's), else
        from the feature cache when they are there."""
        if split.teacher_features is not None:
            return split.teacher_features.float().to(device)
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        feats = self.fm_pass(device).cached(split.dataset, "pooled", name, timings=timings, desc="tdmr FM pass")
        self._reused_fm_pass_s += max(0.0, timings[name] - (time.perf_counter() - t0))  # > 0 on a cache hit
        return feats.float().to(device)

    def train_stage1(self, train: Any, device: torch.device, val: Optional[FeatureSplit] = None) -> None:
        """Train the reprogrammed FM (prompt, projection, classifier) through the frozen FM on the labelled images;
        then compute the student's targets of every training image, unlabelled ones included (fixed view)."""
        o, ds, fm = self.options, train.dataset, self.fm_pass(device)
        n_lab = train.n_labelled if train.n_labelled is not None else len(ds)
        labelled = ds if n_lab == len(ds) else Subset(ds, range(n_lab))
        labels = torch.as_tensor(ds.split.labels[:n_lab], dtype=torch.long)
        # nothing before the FM trains without a prompt: one (cached) FM pass serves every stage-1 epoch
        fixed = self._fixed_features(train, "train", device) if self.reprogrammed.prompt is None else None
        budget = Stage1Budget(o.stage1_head_epochs, o.stage1_epochs, o.stage1_max_steps, o.stage1_lr,
                              o.stage1_batch_size)  # fmt: skip
        curve = None
        if val is not None:
            val_labels = torch.as_tensor(val.dataset.split.labels, dtype=torch.long)
            val_fixed = self._fixed_features(val, "val", torch.device("cpu")) if fixed is not None else None
            curve = ValidationSet(val.dataset, val_labels, val_fixed)
        seed = self.ctx.cfg.train.seed + 17
        own = None if fixed is None else fixed[:n_lab]
        final = self.reprogrammed.fit(labelled, labels, fm, self.task_loss, budget, seed, own, curve)
        if n_lab < len(ds):  # the reprogrammed FM scores the unlabelled images once: stage 2 distils on them too
            rest = fixed[n_lab:] if fixed is not None else self.reprogrammed.prompted_features(
                Subset(ds, range(n_lab, len(ds))), fm)  # fmt: skip
            final = torch.cat([final, rest.to(final.device)])
        with torch.no_grad():
            self.proxy_train, self.logits_train = self.reprogrammed(final)

    def train(self, mode: bool = True) -> "TaskDrivenModelReprogramming":
        super().train(mode)
        self.reprogrammed.eval()  # the reprogrammed FM is fixed in stage 2
        return self

    # ---- stage 2: progressive distillation into the student ----------------------------------------------------
    def forward(self, batch: Batch) -> StepOutput:
        o = self.options
        w = schedule_weights(o.schedule, self.progress, o.t_start, o.t_end)
        f_s = self.student.features(self.student_input(batch))
        z_s = self.student.head(f_s)
        idx = batch["index"]
        proxy_t, logits_t = self.proxy_train[idx], self.logits_train[idx]
        parts = {
            "feat": 1.0 - F.cosine_similarity(self.student_projector(f_s), proxy_t, dim=1).mean(),
            "kd": kd_loss(z_s, logits_t, w["T"]),
            "ce": self.task_loss(z_s, batch["label"]),
        }
        weights = {"feat": o.feature_weight * w["feat"], "kd": o.kd_weight * w["kd"], "ce": o.ce_weight * w["ce"]}
        return StepOutput.weighted(z_s, parts, weights, {"T": w["T"]})

    def extra_logits(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The reprogrammed FM itself (prompt + FM + projection + classifier), scored on the evaluation images."""
        with torch.no_grad():
            return {"reprogrammed_fm": self.reprogrammed(self.reprogrammed.fm_features(batch["image"]))[1]}
