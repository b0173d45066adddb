"""`visual_prompt`: PEFT baseline: a learnable visual prompt in the frozen FM's pixel space plus an output mapping.

Output side: for an FM with its own class head (e.g. ImageNet EfficientNet-Lite0), label mapping from source to
target classes, frequency (FLM: fixed before training) or iterative (ILM: redone every epoch with the current
prompt), as in ILM-VP; only the prompt trains. For an FM without a class head (Merlin) a linear head on the
pooled features (BN without affine + linear, like the probe) trains with the prompt. Gradients flow through the
frozen FM to the prompt, so this method never uses the feature cache. Deploys the FM with its prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import torch

from reprodistill.errors import ConfigError
from reprodistill.features.split import FeatureSplit
from reprodistill.methods.base import MethodContext, register_method
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

    mapping: torch.Tensor  # a buffer

    def __init__(self, ctx: MethodContext, options: VisualPromptOptions) -> None:
        super().__init__(ctx, options)
        teacher = self.teacher
        has_head = teacher.class_head() is not None
        self.use_label_map = options.output == "label_map" or (options.output == "auto" and has_head)
        if self.use_label_map and not has_head:
            raise ConfigError(f"visual_prompt output=label_map needs an FM with a class head; {teacher.name} has none")
        self.prompt = VisualPrompt(
            teacher.spec, options.prompt, options.pad, learnable_resize=options.resize == "learnable"
        )
        if self.use_label_map:
            self.register_buffer("mapping", torch.arange(ctx.num_classes))
        else:
            d = teacher.feature_dim
            self.head = batchnorm_head(d, ctx.num_classes)
        self._train_split: Optional[FeatureSplit] = None

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        x = self.prompt(images)
        if self.use_label_map:
            return self.teacher.logits(x).float()[:, self.mapping]
        return self.head(self.teacher(x).float())

    def prepare(self, train: FeatureSplit, device: torch.device, val: Optional[FeatureSplit] = None) -> None:
        self._train_split = train
        if self.use_label_map:
            self.remap(device)

    def remap(self, device: torch.device) -> None:
        """Recompute the label mapping from the prompted FM's predictions on the training split."""
        assert self._train_split is not None, "remap runs after prepare()"
        ds = self._train_split.dataset
        fn = lambda x: self.teacher.logits(self.prompt(x)).float()  # noqa: E731
        logits = self.fm_pass(device).features(ds, desc="visual prompt label map", fn=fn)
        labels = torch.as_tensor(ds.split.labels, dtype=torch.long)
        self.mapping.copy_(fit_mapping(logits, labels, self.num_classes).to(self.mapping.device))

    def on_epoch_start(self, epoch: int) -> None:
        """ILM: every epoch after the first re-maps the labels with the current prompt (FLM keeps the first map)."""
        if self.use_label_map and self.options.label_map == "iterative" and self._train_split is not None and epoch:
            self.remap(self.mapping.device)
