"""`lora`: PEFT baseline: LoRA adapters in the frozen FM plus a linear probe head, trained through the FM.

The FM is copied for this method (the shared frozen teacher stays untouched for the other methods of a run);
only the adapters and the head train and are checkpointed. Gradients must flow through the FM, so this method
never uses the feature cache: every training step costs an FM forward and backward. Defaults: rank 8, alpha 16,
the convolutions of the FM's last stage (CNNs) or the attention qkv projections (ViTs). Deploys the whole FM.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from reprodistill.methods.base import MethodContext, register_method
from reprodistill.methods.fm_adapt import FMAdaptation
from reprodistill.peft import inject_lora


@dataclass
class LoRAOptions:
    rank: int = 8
    alpha: float = 16.0
    target: Optional[str] = None  # regex of FM layer names; None: last CNN stage convs or ViT attn.qkv


@register_method("lora")
class LoRAProbe(FMAdaptation):
    Options = LoRAOptions

    def __init__(self, ctx: MethodContext, options: LoRAOptions) -> None:
        super().__init__(ctx, options)
        fm = copy.deepcopy(ctx.teacher)
        object.__setattr__(self, "fm", fm)  # not a submodule: its frozen weights stay out of checkpoints
        wrappers = inject_lora(fm, options.rank, options.alpha, options.target)
        self.adapters = nn.ModuleList(nn.ModuleList([w.lora_a, w.lora_b]) for w in wrappers)
        d = ctx.teacher.feature_dim
        self.head = nn.Sequential(nn.BatchNorm1d(d, affine=False), nn.Linear(d, ctx.num_classes))

    @property
    def adapted_fm(self):
        return self.fm

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        fm = self.fm
        return self.head(fm.pool(fm.forward_map(fm.prepare(images))).float())
