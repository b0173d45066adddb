"""`lora`: PEFT baseline: LoRA adapters in the frozen FM plus a linear probe head, trained through the FM.

The FM is copied for this method (the shared frozen teacher stays untouched for the other methods of a run);
only the adapters and the head train and are checkpointed. Defaults: rank 8, alpha 16, the convolutions of the
FM's last stage (CNNs) or the attention qkv projections (ViTs). Deploys the whole FM.

``trunk_cache`` (default on): when every adapter sits in one stage whose output is the FM's feature map (the
default CNN targets), the frozen trunk before that stage is run once per training image (fixed view, stored in
the feature cache) and training steps run only the adapted stage (:mod:`reprodistill.peft.trunk`); otherwise, or
with ``trunk_cache=false``, every step costs a whole FM forward and backward on the augmented batch. Evaluation
always runs the whole adapted FM.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from reprodistill.features.split import FeatureSplit
from reprodistill.methods.base import Batch, MethodContext, register_method
from reprodistill.methods.fm_adapt import FMAdaptation
from reprodistill.models.teacher import Teacher
from reprodistill.peft import inject_lora
from reprodistill.peft.trunk import last_stage_boundary, stage_inputs
from reprodistill.reprogram.probe import batchnorm_head

log = logging.getLogger("reprodistill")


@dataclass
class LoRAOptions:
    rank: int = 8
    alpha: float = 16.0
    target: Optional[str] = None  # regex of FM layer names; None: last CNN stage convs or ViT attn.qkv
    trunk_cache: bool = True


@register_method("lora")
class LoRAProbe(FMAdaptation):
    Options = LoRAOptions
    # the adapted FM copy and its adapted stage: plain attributes, not submodules (their frozen weights stay out of
    # checkpoints)
    fm: Teacher
    stage: Optional[nn.Module]

    def __init__(self, ctx: MethodContext, options: LoRAOptions) -> None:
        super().__init__(ctx, options)
        fm = copy.deepcopy(self.teacher)
        object.__setattr__(self, "fm", fm)  # not a submodule: its frozen weights stay out of checkpoints
        wrappers = inject_lora(fm, options.rank, options.alpha, options.target)
        self.adapters = nn.ModuleList(nn.ModuleList([w.lora_a, w.lora_b]) for w in wrappers)
        d = self.teacher.map_pooled_dim  # the adapted FM is pooled at its last map only (no pool_layers)
        self.head = batchnorm_head(d, ctx.num_classes)
        names = [n for n, m in fm.named_modules() if any(m is w for w in wrappers)]
        self.stage_name = last_stage_boundary(fm, names) if options.trunk_cache else None
        # the adapted stage itself, looked up once (not a submodule: it belongs to the FM copy)
        object.__setattr__(self, "stage", dict(fm.named_modules())[self.stage_name] if self.stage_name else None)
        self.trunk_train: Optional[torch.Tensor] = None  # fp16 [N, ...] input of the adapted stage, fixed view

    def prepare(self, train: FeatureSplit, device: torch.device, val: Optional[FeatureSplit] = None) -> None:
        """With the trunk cache: the adapted stage's input for every training image, from the feature cache."""
        if self.stage_name is None:
            if self.options.trunk_cache:
                log.info("lora: adapters are not confined to the FM's last stage; training runs the whole FM")
            return
        name = self.stage_name
        teacher = self.teacher  # the unadapted original: the trunk before the adapted stage is identical
        timings: dict[str, float] = {}
        self.trunk_train = self.fm_pass(device).cached(
            train.dataset,
            kind=f"stage-input:{name}",
            name="train",
            fn=lambda x: stage_inputs(teacher, name, x),
            timings=timings,
            desc=f"FM trunk to {name}",
        )
        self.prepare_s = timings["train"]  # the trunk pass, also when it came from the cache
        log.info("lora: trunk cache on: training steps run only %s", name)

    def train_logits(self, batch: Batch) -> torch.Tensor:
        if self.trunk_train is None:
            return self.logits(batch["image"])
        assert self.stage is not None  # the trunk cache is filled only where the adapted stage is known
        x = self.trunk_train[batch["index"].cpu()].to(batch["label"].device).float()
        if x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)  # the FMs here run channels_last on CPU
        return self.head(self.fm.pool(self.stage(x)).float())

    @property
    def adapted_fm(self):
        return self.fm

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        fm = self.fm
        return self.head(fm.pool(fm.forward_map(fm.prepare(images))).float())
