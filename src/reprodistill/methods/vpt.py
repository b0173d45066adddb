"""`vpt`: PEFT baseline for ViT teachers: Visual Prompt Tuning (Jia et al., ECCV 2022) + a linear head.

``num_tokens`` learnable prompt tokens are inserted after the class/prefix tokens of a timm ViT: once before the
first block (``shallow``, the default) or a fresh set before every block (``deep``). The frozen ViT runs with them,
the prompt outputs are dropped before pooling, and a linear head (BN without affine + linear, like the probe)
scores the pooled features. Only prompts and head train; gradients flow through the frozen FM, so the feature
cache is not used. Prompts are initialised uniformly with the VPT paper's bound sqrt(6 / (3 * patch area + dim)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from reprodistill.errors import ConfigError
from reprodistill.methods.base import MethodContext, register_method
from reprodistill.methods.fm_adapt import FMAdaptation
from reprodistill.reprogram.probe import batchnorm_head


@dataclass
class VPTOptions:
    num_tokens: int = 10
    mode: Literal["shallow", "deep"] = "shallow"


def _vit(teacher: Any) -> Any:  # a timm VisionTransformer, duck-typed
    model = getattr(teacher, "model", None)
    needed = ("patch_embed", "_pos_embed", "blocks", "norm", "forward_head", "num_prefix_tokens")
    if model is None or not all(hasattr(model, a) for a in needed):
        raise ConfigError(
            f"vpt needs a timm Vision Transformer teacher (e.g. teacher.name=<vit checkpoint> "
            f"teacher.arch=vit_tiny_patch16_224); {teacher.name} is not one. Use lora or visual_prompt for CNN FMs."
        )
    return model


@register_method("vpt")
class VisualPromptTuning(FMAdaptation):
    Options = VPTOptions

    def __init__(self, ctx: MethodContext, options: VPTOptions) -> None:
        super().__init__(ctx, options)
        vit = _vit(self.teacher)
        dim = vit.embed_dim
        patch = math.prod(vit.patch_embed.patch_size)
        bound = math.sqrt(6.0 / (3 * patch + dim))
        sets = len(vit.blocks) if options.mode == "deep" else 1
        self.prompts = nn.Parameter(torch.empty(sets, options.num_tokens, dim).uniform_(-bound, bound))
        d = self.teacher.map_pooled_dim  # the adapted FM is pooled at its last map only (no pool_layers)
        self.head = batchnorm_head(d, ctx.num_classes)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features of the prompted ViT for a preprocessed batch."""
        m, k = _vit(self.teacher), self.options.num_tokens
        p = m.num_prefix_tokens
        x = m._pos_embed(m.patch_embed(x))
        x = m.norm_pre(x) if hasattr(m, "norm_pre") else x
        b = len(x)
        for i, block in enumerate(m.blocks):
            if i == 0:
                x = torch.cat([x[:, :p], self.prompts[0].expand(b, -1, -1), x[:, p:]], dim=1)
            elif self.options.mode == "deep":  # replace last block's prompt outputs with this block's prompts
                x = torch.cat([x[:, :p], self.prompts[i].expand(b, -1, -1), x[:, p + k :]], dim=1)
            x = block(x)
        x = m.norm(x)
        x = torch.cat([x[:, :p], x[:, p + k :]], dim=1)  # pooling sees the image tokens only, as without prompts
        return m.forward_head(x, pre_logits=True).float()

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.pooled(self.teacher.prepare(images)))
