"""Shared base of the PEFT baselines that train through the frozen FM and deploy it (lora, vpt, visual_prompt)."""

from __future__ import annotations

import torch
from torch import nn

from reprodistill.data.transforms import InputSpec
from reprodistill.methods.base import Batch, Method, StepOutput
from reprodistill.models.teacher import Teacher


class FMAdaptation(Method):
    """Subclasses implement :meth:`logits` from uint8 images; loss, prediction and deployment are common."""

    uses_student = False
    uses_teacher = True

    @property
    def adapted_fm(self) -> Teacher:
        """The FM this method runs (the shared frozen teacher, or a private adapted copy)."""
        return self.teacher

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def train_logits(self, batch: Batch) -> torch.Tensor:
        """Logits of a training batch (by default the same path as prediction)."""
        return self.logits(batch["image"])

    def forward(self, batch: Batch) -> StepOutput:
        logits = self.train_logits(batch) if self.training else self.logits(batch["image"])
        ce = self.task_loss(logits, batch["label"])
        return StepOutput(ce, logits, {"ce": ce})

    def predict(self, batch: Batch) -> torch.Tensor:
        return self.logits(batch["image"])

    def deployed(self) -> nn.Module:
        return _DeployedFM(self)

    def deployed_spec(self) -> InputSpec:
        return self.adapted_fm.spec


class _DeployedFM(nn.Module):
    """What ships: the whole FM plus the method's trained parts (both submodules, so their size is counted)."""

    def __init__(self, method: FMAdaptation) -> None:
        super().__init__()
        self.fm, self.trained = method.adapted_fm, method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trained.logits(x)
