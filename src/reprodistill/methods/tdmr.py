"""`tdmr`: Task-Driven Model Reprogramming (Xu et al., arXiv 2304.02263): reprogram the frozen FM into a proxy
space for the task, then distil it into the student progressively.

Stage 1 (in :meth:`prepare`, before the shared loop trains the student): a visual prompt in the FM's pixel space
(:class:`~reprodistill.reprogram.prompt.VisualPrompt`; padding frame by default) feeds the frozen FM; a projection
head maps its pooled features into a ``proxy_dim`` proxy space and a linear classifier scores the task there.
Only prompt, projection and classifier train (AdamW, class-weighted CE). First the projection and classifier are
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
from tqdm.auto import tqdm

from reprodistill.distill import kd_loss
from reprodistill.errors import ConfigError
from reprodistill.features.cache import cache_key, cached_features, resolve_cache_dir
from reprodistill.features.extract import extract_features
from reprodistill.features.split import FeatureSplit
from reprodistill.methods.base import Batch, Method, MethodContext, register_method
from reprodistill.reprogram.label_map import MappedHead
from reprodistill.reprogram.probe import batchnorm_head
from reprodistill.reprogram.prompt import VisualPrompt
from reprodistill.util.checkpoint import atomic_write

log = logging.getLogger("reprodistill")
STAGE1_FORMAT = 1
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
    uses_teacher = True
    Options = TDMROptions

    def __init__(self, ctx: MethodContext, options: TDMROptions) -> None:
        super().__init__(ctx, options)
        d_t = ctx.teacher.feature_dim
        self.prompt = None
        if options.prompt != "none":
            resize = options.resize == "learnable"
            self.prompt = VisualPrompt(ctx.teacher.spec, options.prompt, options.pad, learnable_resize=resize)
        self.label_mapped = options.output == "label_map"
        head = ctx.teacher.class_head()
        if self.label_mapped and head is None:
            raise ConfigError(
                f"tdmr output=label_map needs an FM with its own class head; {ctx.teacher.name} has none "
                "(use output=projection, or an FM such as efficientnet_lite0)"
            )
        proxy = options.proxy if options.proxy != "auto" else ("none" if self.label_mapped else "linear")
        if self.label_mapped and proxy == "linear":
            raise ConfigError("tdmr output=label_map scores the task with the FM's own head, so a proxy projection "
                              "would never train; use proxy=none or proxy=auto")  # fmt: skip
        if proxy == "linear":
            self.projection: nn.Module = batchnorm_head(d_t, options.proxy_dim)
            d_p = options.proxy_dim
        else:
            self.projection = nn.BatchNorm1d(d_t, affine=False)
            d_p = d_t
        self.fm_classifier = MappedHead(head, ctx.num_classes) if self.label_mapped else nn.Linear(d_p, ctx.num_classes)
        self.student_projector = nn.Linear(self.student.feature_dim, d_p)
        self.register_buffer("proxy_train", torch.zeros(0, d_p), persistent=False)
        self.register_buffer("logits_train", torch.zeros(0, ctx.num_classes), persistent=False)
        self._reused_fm_pass_s = 0.0  # seconds of an FM pass that stage 1 read from the feature cache

    # ---- stage 1: reprogram the frozen FM ---------------------------------------------------------------------
    def fm_input(self, images: torch.Tensor) -> torch.Tensor:
        return self.prompt(images) if self.prompt is not None else self.teacher.prepare(images)

    def fm_features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled features of the (prompted) FM, with gradients to the prompt when it trains."""
        return self.teacher(self.fm_input(images)).float()

    def reprogrammed(self, f_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(proxy features, task logits) of pooled FM features; a label-mapped FM scores its own features."""
        z = self.projection(f_t)
        return z, self.fm_classifier(f_t if self.label_mapped else z)

    def stage1_modules(self) -> list[nn.Module]:
        return [m for m in (self.prompt, self.projection, self.fm_classifier) if m is not None]

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
        return resolve_cache_dir(cfg.teacher.cache_dir) / f"tdmr-stage1-{key}.pt"

    def _stage1_state(self) -> dict[str, Any]:
        return {"modules": [m.state_dict() for m in self.stage1_modules()],
                "proxy_train": self.proxy_train, "logits_train": self.logits_train}  # fmt: skip

    def prepare(self, train: FeatureSplit, device: torch.device, val: Optional[FeatureSplit] = None) -> None:
        """Stage 1, or its stored result when the same stage 1 ran before (deterministic, so resume-safe)."""
        path = self.stage1_cache_path(train)
        if path is not None and path.is_file():
            state = torch.load(path, map_location=device, weights_only=True)
            for m, sd in zip(self.stage1_modules(), state["modules"]):
                m.load_state_dict(sd)
            self.proxy_train, self.logits_train = state["proxy_train"], state["logits_train"]
            self.prepare_s = state.get("compute_seconds")
            self.stage1_steps = 0
            self._freeze_stage1()
            log.info("tdmr: stage 1 loaded from %s", path)
            return
        t0 = time.perf_counter()
        self.train_stage1(train, device)
        # cost of this stage 1: its wall time, plus the FM pass it read from the feature cache (prompt=none)
        self.prepare_s = time.perf_counter() - t0 + self._reused_fm_pass_s
        if path is not None:
            state = {k: v.cpu() if torch.is_tensor(v) else v for k, v in self._stage1_state().items()}
            state["compute_seconds"] = self.prepare_s
            atomic_write(path, lambda tmp: torch.save(state, tmp))

    def _fixed_features(self, train: Any, device: torch.device) -> torch.Tensor:
        """Fixed-view pooled FM features of the training split, from the feature cache when they are there."""
        cfg = self.ctx.cfg
        ds = train.dataset
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        feats = cached_features(
            self.teacher,
            ds,
            cfg.teacher.cache_dir,
            kind="pooled",
            name="train",
            timings=timings,
            compute=lambda: extract_features(self.teacher, ds, cfg.teacher.batch_size, device, desc="tdmr FM pass"),
        )
        self._reused_fm_pass_s = max(0.0, timings["train"] - (time.perf_counter() - t0))  # > 0 on a cache hit
        return feats.float().to(device)

    def train_stage1(self, train: Any, device: torch.device) -> None:
        """Train prompt, projection and FM classifier through the frozen FM; then compute the training targets."""
        o = self.options
        ds = train.dataset
        n = len(ds)
        labels = torch.as_tensor(ds.split.labels, dtype=torch.long)
        images = lambda idx: torch.stack([ds[int(i)]["image"] for i in idx]).to(device)  # noqa: E731
        params = [p for m in self.stage1_modules() for p in m.parameters()]
        opt = torch.optim.AdamW(params, lr=o.stage1_lr, weight_decay=1e-4) if params else None
        gen = torch.Generator().manual_seed(self.ctx.cfg.train.seed + 17)
        # nothing before the FM trains without a prompt: one (cached) FM pass serves every stage-1 epoch
        fixed = self._fixed_features(train, device) if self.prompt is None else None
        for m in self.stage1_modules():
            m.train()
        need_warm = o.stage1_head_epochs or self.label_mapped
        warm = fixed if fixed is not None else self._prompted_features(images, n) if need_warm else None
        if self.label_mapped:  # FLM / first ILM mapping, and the proxy space's statistics, from the initial prompt
            self.fm_classifier.fit(warm, labels)
            self.projection.running_mean.copy_(warm.mean(0))
            self.projection.running_var.copy_(warm.var(0))
        # warm-up of projection + classifier on the features under the initial prompt (no FM backward)
        for _ in range(o.stage1_head_epochs if not self.label_mapped else 0):
            for idx in torch.randperm(n, generator=gen).split(o.stage1_batch_size):
                if len(idx) >= 2:  # BatchNorm needs two samples
                    self._stage1_step(opt, warm[idx], labels[idx].to(device))
        max_steps = o.stage1_max_steps if o.stage1_max_steps is not None else float("inf")
        if opt is None:  # a label-mapped FM without a prompt: nothing trains, the mapping is all of stage 1
            max_steps = 0
        self.stage1_steps = 0
        bar = tqdm(total=int(min(o.stage1_epochs * -(-n // o.stage1_batch_size), max_steps)), desc="tdmr stage 1",
                   unit="step", leave=False, disable=None)  # fmt: skip
        for epoch in range(o.stage1_epochs):
            if self.label_mapped and o.label_map == "iterative" and epoch > 0 and self.stage1_steps < max_steps:
                self.fm_classifier.fit(self._prompted_features(images, n), labels)  # ILM: re-map with this prompt
            for idx in torch.randperm(n, generator=gen).split(o.stage1_batch_size):
                if self.stage1_steps >= max_steps:
                    break
                if len(idx) < 2:  # BatchNorm needs two samples
                    continue
                f_t = fixed[idx] if fixed is not None else self.fm_features(images(idx))
                loss = self._stage1_step(opt, f_t, labels[idx].to(device))
                self.stage1_steps += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}")
        bar.close()
        log.info("tdmr: stage 1 trained for %d steps", self.stage1_steps)
        self._freeze_stage1()
        with torch.no_grad():
            z, logits = self.reprogrammed(fixed if fixed is not None else self._prompted_features(images, n))
        self.proxy_train, self.logits_train = z, logits

    def _stage1_step(self, opt: torch.optim.Optimizer, f_t: torch.Tensor, labels: torch.Tensor) -> float:
        loss = self.task_loss(self.reprogrammed(f_t)[1], labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    @torch.no_grad()
    def _prompted_features(self, images: Any, n: int) -> torch.Tensor:
        """Pooled FM features of every training image under the current prompt (one forward pass, no backward)."""
        return torch.cat([self.fm_features(images(range(s, min(s + 256, n)))) for s in range(0, n, 256)])

    def _freeze_stage1(self) -> None:
        for m in self.stage1_modules():
            m.eval()
            m.requires_grad_(False)  # frozen from here on: stage 2 distils from it

    def train(self, mode: bool = True) -> "TaskDrivenModelReprogramming":
        super().train(mode)
        for m in self.stage1_modules():
            m.eval()  # the reprogrammed FM is fixed in stage 2
        return self

    # ---- stage 2: progressive distillation into the student ----------------------------------------------------
    def forward(self, batch: Batch) -> dict[str, Any]:
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
        loss = (
            o.feature_weight * w["feat"] * parts["feat"]
            + o.kd_weight * w["kd"] * parts["kd"]
            + o.ce_weight * w["ce"] * parts["ce"]
        )
        logged = {k: v.detach() for k, v in parts.items()} | {f"w_{k}": torch.tensor(v) for k, v in w.items()}
        return {"loss": loss, "logits": z_s, "parts": logged}

    def extra_logits(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The reprogrammed FM itself (prompt + FM + projection + classifier), scored on the evaluation images."""
        with torch.no_grad():
            return {"reprogrammed_fm": self.reprogrammed(self.fm_features(batch["image"]))[1]}
