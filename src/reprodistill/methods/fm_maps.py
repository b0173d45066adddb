"""Shared base of the feature-map KD baselines (FitNet, AT): the FM's last feature map guides one student stage.

The cache holds the FM's last feature map only, so it is the hint for every student; the guided student stage is
``stage`` (default: the last stage whose output is at least as large as the FM map, i.e. the deepest stage that
still keeps the FM's spatial detail: for resnet18 at 28 px vs Merlin's 4x4 map that is layer2, 4x4).
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from reprodistill.errors import ConfigError
from reprodistill.methods.base import Batch, MethodContext
from reprodistill.methods.fm_kd import ProbedFMDistillation
from reprodistill.models.stages import staged


class FeatureMapDistillation(ProbedFMDistillation):
    teacher_features = "map"

    def __init__(self, ctx: MethodContext, options: Any) -> None:
        super().__init__(ctx, options)
        self.staged = staged(self.student)
        c_t, *self.teacher_map_size = self.teacher.spatial_map_shape(self.name)  # one FM probe for both
        shapes = self.staged.probe_shapes(self.student)[1]
        self.stage = self._pick_stage(shapes, getattr(options, "stage", None))
        self.student_map_shape = shapes[self.stage]
        self.teacher_channels = c_t

    def _pick_stage(self, shapes: list[tuple[int, ...]], stage: Optional[int]) -> int:
        if stage is not None:
            if not 0 <= stage < len(shapes):
                raise ConfigError(
                    f"method_options.{self.name}.stage={stage}: the student has stages 0..{len(shapes) - 1}"
                )
            return stage
        h_t, w_t = self.teacher_map_size
        fits = [i for i, (_, h, w) in enumerate(shapes) if h >= h_t and w >= w_t]
        return fits[-1] if fits else 0

    def student_outputs(self, batch: Batch) -> dict[str, torch.Tensor]:
        f, outs = self.staged.forward_with_stage_outputs(self.student_input(batch))
        return {"features": f, "logits": self.student.head(f), "map": outs[self.stage]}
