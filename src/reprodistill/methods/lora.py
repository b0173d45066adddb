"""`lora`: PEFT baseline: LoRA adapters in the frozen FM plus a linear probe head, trained through the FM.

The FM is copied for this method (the shared frozen teacher stays untouched for the other methods of a run);
only the adapters and the head train and are checkpointed. Gradients must flow through the FM, so this method
never uses the feature cache: every training step costs an FM forward and backward. Defaults: rank 8, alpha 16,
the convolutions of the FM's last stage (CNNs) or the attention qkv projections (ViTs). Deploys the whole FM.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Optional

from torch import nn

from reprodistill.data.transforms import InputSpec
from reprodistill.methods.base import Batch, Method, MethodContext, register_method
from reprodistill.peft import inject_lora


@dataclass
class LoRAOptions:
    rank: int = 8
    alpha: float = 16.0
    target: Optional[str] = None  # regex of FM layer names; None: last CNN stage convs or ViT attn.qkv


class _AdaptedFM(nn.Module):
    """uint8 images -> logits through the adapted FM and the head (what is deployed)."""

    def __init__(self, fm: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.fm, self.head = fm, head

    def forward(self, x):
        return self.head(self.fm.pool(self.fm.forward_map(x)))


@register_method("lora")
class LoRAProbe(Method):
    uses_student = False
    uses_teacher = True
    Options = LoRAOptions

    def __init__(self, ctx: MethodContext, options: LoRAOptions) -> None:
        super().__init__(ctx, options)
        fm = copy.deepcopy(ctx.teacher)
        object.__setattr__(self, "fm", fm)  # not a submodule: its frozen weights stay out of checkpoints
        wrappers = inject_lora(fm, options.rank, options.alpha, options.target)
        self.adapters = nn.ModuleList(nn.ModuleList([w.lora_a, w.lora_b]) for w in wrappers)
        d = ctx.teacher.feature_dim
        self.head = nn.Sequential(nn.BatchNorm1d(d, affine=False), nn.Linear(d, ctx.num_classes))

    def logits(self, batch: Batch):
        fm = self.fm
        return self.head(fm.pool(fm.forward_map(fm.prepare(batch["image"]))).float())

    def forward(self, batch: Batch) -> dict[str, Any]:
        logits = self.logits(batch)
        ce = self.task_loss(logits, batch["label"])
        return {"loss": ce, "logits": logits, "parts": {"ce": ce.detach()}}

    def predict(self, batch: Batch):
        return self.logits(batch)

    def deployed(self) -> nn.Module:
        return _AdaptedFM(self.fm, self.head)

    def deployed_spec(self) -> InputSpec:
        return self.fm.spec
