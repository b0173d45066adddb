"""`visual_prompt`: PEFT baseline: a learnable visual prompt in the frozen FM's pixel space plus an output mapping.

Output side: for an FM with its own class head (e.g. ImageNet EfficientNet-Lite0), label mapping from source to
target classes, frequency (FLM: fixed before training) or iterative (ILM: redone every epoch with the current
prompt), as in ILM-VP; only the prompt trains. For an FM without a class head (Merlin) a linear head on the
pooled features (BN without affine + linear, like the probe) trains with the prompt. Gradients flow through the
frozen FM to the prompt, so this method never uses the feature cache. Deploys the FM with its prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional

import torch

from reprodistill.errors import ConfigError
from reprodistill.features.split import FeatureSplit
from reprodistill.methods.base import Batch, MethodContext, register_method
from reprodistill.methods.fm_adapt import FMAdaptation
from reprodistill.reprogram.label_map import fit_mapping
from reprodistill.reprogram.probe import batchnorm_head
from reprodistill.reprogram.prompt import VisualPrompt


@dataclass
class VisualPromptOptions:
    prompt: Literal["padding", "additive"] = "padding"
    pad: Optional[int] = None  # frame width in FM pixels; None: size // 7 (16 at 112 px, 32 at 224 px)
    resize: Literal["fixed", "learnable"] = "fixed"  # learnable: the image's scale on the canvas trains too
    # 'auto': label mapping if the FM has a class head, else a linear head
    output: Literal["auto", "label_map", "linear"] = "auto"
    label_map: Literal["iterative", "frequency"] = "iterative"


@register_method("visual_prompt")
class VisualPromptMethod(FMAdaptation):
    Options = VisualPromptOptions

    def __init__(self, ctx: MethodContext, options: VisualPromptOptions) -> None:
        super().__init__(ctx, options)
        teacher = ctx.teacher
        has_head = teacher.class_head() is not None
        self.use_label_map = options.output == "label_map" or (options.output == "auto" and has_head)
        if self.use_label_map and not has_head:
            raise ConfigError(f"visual_prompt output=label_map needs an FM with a class head; {teacher.name} has none")
        self.prompt = VisualPrompt(
            teacher.spec, options.prompt, options.pad, learnable_resize=options.resize == "learnable"
        )
        if self.use_label_map:
            self.register_buffer("mapping", torch.arange(ctx.num_classes))
            self._mapped_epoch = -1
        else:
            d = teacher.feature_dim
            self.head = batchnorm_head(d, ctx.num_classes)
        self._train_split = None

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        x = self.prompt(images)
        if self.use_label_map:
            return self.teacher.logits(x).float()[:, self.mapping]
        return self.head(self.teacher(x).float())

    def prepare(self, train: FeatureSplit, device: torch.device, val: Optional[FeatureSplit] = None) -> None:
        self._train_split = train
        if self.use_label_map:
            self.remap(device)

    @torch.no_grad()
    def remap(self, device: torch.device, batch_size: int = 64) -> None:
        """Recompute the label mapping from the prompted FM's predictions on the training split."""
        ds = self._train_split.dataset
        logits, labels = [], []
        for start in range(0, len(ds), batch_size):
            items = [ds[i] for i in range(start, min(start + batch_size, len(ds)))]
            images = torch.stack([it["image"] for it in items]).to(device)
            logits.append(self.teacher.logits(self.prompt(images)).float().cpu())
            labels.append(torch.stack([it["label"] for it in items]))
        self.mapping.copy_(fit_mapping(torch.cat(logits), torch.cat(labels), self.num_classes).to(self.mapping.device))

    def forward(self, batch: Batch) -> dict[str, Any]:
        if self.use_label_map and self.options.label_map == "iterative" and self._train_split is not None:
            epoch = int(self.progress * self.ctx.cfg.train.epochs + 1e-9)
            if epoch != self._mapped_epoch:  # start of a new epoch: ILM re-maps with the current prompt
                self._mapped_epoch = epoch
                if epoch > 0:
                    self.remap(batch["image"].device)
        return super().forward(batch)
