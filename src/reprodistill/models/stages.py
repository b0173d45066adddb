"""Stage-wise access to timm students, for methods that feed features into the middle of the network (DRD).

Supported families: ResNet-style models (``layer1..layer4``) and EfficientNet/MobileNet-style models (``blocks``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from reprodistill.errors import ConfigError
from reprodistill.models.student import Student


@dataclass
class StagedStudent:
    """``features(x) == post(stages[-1](...stages[0](stem(x))))`` pooled by the student's head path."""

    stem: Callable[[torch.Tensor], torch.Tensor]
    stages: list[nn.Module]
    post: Callable[[torch.Tensor], torch.Tensor]
    pooled: Callable[[torch.Tensor], torch.Tensor]

    def run_from(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """Pooled features when ``x`` is fed as the input of stage ``start``."""
        for stage in self.stages[start:]:
            x = stage(x)
        return self.pooled(self.post(x))

    def forward_with_stage_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(pooled features, [output of stage 0, output of stage 1, ...])."""
        outputs = []
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return self.pooled(self.post(x)), outputs

    def probe_shapes(self, student: Student) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
        """([input shape of each stage], [output shape of each stage]) for one image, without batch dim."""
        spec = student.spec
        was = student.training
        student.eval()
        with torch.no_grad():
            x = self.stem(torch.zeros(1, spec.channels, *spec.size))
            ins, outs = [], []
            for stage in self.stages:
                ins.append(tuple(x.shape[1:]))
                x = stage(x)
                outs.append(tuple(x.shape[1:]))
        student.train(was)
        return ins, outs

    def forward_with_stage_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(pooled features, [input of stage 0, input of stage 1, ...])."""
        inputs = []
        x = self.stem(x)
        for stage in self.stages:
            inputs.append(x)
            x = stage(x)
        return self.pooled(self.post(x)), inputs


def staged(student: Student) -> StagedStudent:
    """Split a timm student into stem, stages and the rest; raises ConfigError for unsupported families."""
    m: Any = student.model  # family-specific attributes (layer1, conv_stem, blocks ...), found by hasattr below
    pooled = lambda x: m.forward_head(x, pre_logits=True)  # noqa: E731
    if all(hasattr(m, f"layer{i}") for i in range(1, 5)) and hasattr(m, "conv1"):
        stem = lambda x: m.maxpool(m.act1(m.bn1(m.conv1(x))))  # noqa: E731
        return StagedStudent(stem, [getattr(m, f"layer{i}") for i in range(1, 5)], nn.Identity(), pooled)
    if hasattr(m, "blocks") and hasattr(m, "conv_stem"):
        stem = lambda x: m.bn1(m.conv_stem(x))  # noqa: E731
        # EfficientNet ends forward_features with conv_head/bn2; MobileNetV3 keeps conv_head in forward_head
        has_tail = hasattr(m, "bn2") and hasattr(m, "conv_head") and type(m).__name__ == "EfficientNet"
        post = (lambda x: m.bn2(m.conv_head(x))) if has_tail else nn.Identity()
        return StagedStudent(stem, list(m.blocks), post, pooled)
    raise ConfigError(
        f"student {student.arch!r}: stage-wise methods support ResNet-, EfficientNet- and MobileNet-style "
        "timm models (resnet18, efficientnet_lite0, mobilenetv3_small_100, ...)"
    )
