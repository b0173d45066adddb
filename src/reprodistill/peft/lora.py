"""A small LoRA (Hu et al., 2022) for the Conv2d and Linear layers of a frozen model.

``y = W x + (alpha / r) * B(A(x))`` with A (r outputs, same kernel/stride/padding as the layer) Kaiming-initialised
and B (1x1 conv or linear, r -> out) zero-initialised, so the adapted model starts equal to the frozen one. The
``peft`` library is not used: it pulls in transformers/accelerate and adapts convolutions only in recent
versions, while two small wrappers cover every FM here (CNNs and timm ViTs).
"""

from __future__ import annotations

import math
import re
from typing import Optional

import torch
from torch import nn

from reprodistill.errors import ConfigError


class LoRAConv2d(nn.Module):
    def __init__(self, base: nn.Conv2d, rank: int, alpha: float) -> None:
        super().__init__()
        self.base, self.scale = base, alpha / rank
        # torch types a built Conv2d's sizes as tuple[int, ...]; a 2-d convolution's are pairs
        pair = lambda t: (int(t[0]), int(t[1]))  # noqa: E731
        padding = base.padding if isinstance(base.padding, str) else pair(base.padding)
        self.lora_a = nn.Conv2d(base.in_channels, rank, pair(base.kernel_size), pair(base.stride), padding,
                                pair(base.dilation), bias=False)  # fmt: skip
        self.lora_b = nn.Conv2d(rank, base.out_channels, 1, bias=False)
        nn.init.kaiming_uniform_(self.lora_a.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_b.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scale * self.lora_b(self.lora_a(x))


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base, self.scale = base, alpha / rank
        self.lora_a = nn.Linear(base.in_features, rank, bias=False)
        self.lora_b = nn.Linear(rank, base.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_a.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_b.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scale * self.lora_b(self.lora_a(x))


def default_targets(model: nn.Module) -> str:
    """A regex of the layers to adapt: attention projections of ViTs (timm's qkv; query and value projections of
    transformers encoders, as in the LoRA paper), the MLP of open_clip ViT blocks (whose attention keeps q/k/v and
    its output projection inside ``nn.MultiheadAttention``, which reads their weights directly), else the
    convolutions of the last CNN stage."""
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if any(n.endswith("attn.qkv") for n in names):
        return r"attn\.qkv$"
    if any(n.endswith("attention.q_proj") for n in names):
        return r"attention\.(q_proj|v_proj)$"
    if any(n.endswith("attention.query") for n in names):  # older transformers naming
        return r"attention\.(query|value)$"
    if any(".resblocks." in n and n.endswith("mlp.c_fc") for n in names):
        return r"resblocks\.\d+\.mlp\.(c_fc|c_proj)$"
    for stage in ("layer4", "stages.3", "blocks.6", "blocks.5"):
        if any(n.startswith(stage + ".") or f".{stage}." in n for n in names):
            return rf"(^|\.){re.escape(stage)}\..*conv"
    raise ConfigError("cannot guess which FM layers get LoRA; set method_options.lora.target=<regex of layer names>")


def inject_lora(
    model: nn.Module, rank: int = 8, alpha: float = 16.0, target: Optional[str] = None
) -> list[LoRAConv2d | LoRALinear]:
    """Replace every Conv2d / Linear whose name matches ``target`` (a regex searched in the dotted name) by its
    LoRA wrapper; returns the wrappers. Grouped convolutions (depthwise) are left alone."""
    pattern = re.compile(target or default_targets(model))
    wrapped: list[LoRAConv2d | LoRALinear] = []
    for name, module in list(model.named_modules()):
        if not pattern.search(name):
            continue
        new: LoRAConv2d | LoRALinear
        if isinstance(module, nn.Conv2d) and module.groups == 1:
            new = LoRAConv2d(module, rank, alpha)
        elif isinstance(module, nn.Linear):
            new = LoRALinear(module, rank, alpha)
        else:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, new.to(next(module.parameters()).device))
        wrapped.append(new)
    if not wrapped:
        raise ConfigError(f"LoRA target {pattern.pattern!r} matched no Conv2d/Linear layer of the FM")
    return wrapped
