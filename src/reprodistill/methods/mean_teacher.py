"""`mean_teacher`: the student plus Mean Teacher's consistency on every training image, labelled or not (Tarvainen &
Valpola, NeurIPS 2017, arXiv 1703.01780), no FM.

An exponential moving average (EMA) of the trained network's weights predicts a second weak view of each image;
the trained network is pulled toward it with a softmax MSE whose weight ramps up (sigmoid) over the first
``rampup`` of training. The EMA network is what is deployed (the paper's better model), so it lives in
``self.student`` (checkpointed, exported, measured) and the trained network in ``self.online``; both start from the
same initial student (ImageNet weights with ``student.pretrained``).
Defaults: EMA decay 0.99 (the paper's ramp-up value; with a budget of a few hundred steps 0.999 would average over
more steps than there are), consistency weight 50 and ramp-up over 40% (USB's defaults for this MSE), decay
``min(decay, 1 - 1 / (step + 1))`` so early steps average instead of keeping the random start.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from reprodistill.data.transforms import ExtraView, preprocess
from reprodistill.losses import sigmoid_rampup, softmax_mse
from reprodistill.methods.base import Batch, Method, MethodContext, StepOutput, register_method


@dataclass
class MeanTeacherOptions:
    consistency_weight: float = 50.0
    rampup: float = 0.4
    ema_decay: float = 0.99


@torch.no_grad()
def ema_update(ema: torch.nn.Module, online: torch.nn.Module, decay: float | torch.Tensor) -> None:
    """``ema <- decay * ema + (1 - decay) * online`` for parameters and float buffers (BatchNorm statistics);
    integer buffers (batch counters) are copied. ``decay`` may be a 0-d tensor (no host sync)."""
    w = 1.0 - decay
    for p_ema, p in zip(ema.parameters(), online.parameters(), strict=True):
        p_ema.lerp_(p.detach(), w)
    for b_ema, b in zip(ema.buffers(), online.buffers(), strict=True):
        if b_ema.dtype.is_floating_point:
            b_ema.lerp_(b, w)
        else:
            b_ema.copy_(b)


@register_method("mean_teacher")
class MeanTeacher(Method):
    uses_unlabelled = True  # CE skips unlabelled images; the consistency term needs no label
    Options = MeanTeacherOptions
    loss_weights = ("consistency_weight",)

    ema_steps: torch.Tensor  # a buffer

    def __init__(self, ctx: MethodContext, options: MeanTeacherOptions) -> None:
        super().__init__(ctx, options)
        self.online = copy.deepcopy(self.student)  # trained; self.student is its EMA, deployed
        self.student.requires_grad_(False)
        self.register_buffer("ema_steps", torch.zeros((), dtype=torch.long))  # checkpointed: a resumed run goes on
        t = ctx.cfg.train
        self.input_views = {"second": ExtraView(False, t.augment_shift, t.augment_flip)}

    def forward(self, batch: Batch) -> StepOutput:
        o = self.options
        logits = self.online(self.student_input(batch))
        with torch.no_grad():
            target = self.student(preprocess(batch["image_second"], self.student.spec))
        parts = {"ce": self.task_loss(logits, batch["label"]), "consistency": softmax_mse(logits, target)}
        weight = o.consistency_weight * sigmoid_rampup(self.progress, o.rampup)
        return StepOutput.weighted(logits, parts, {"consistency": weight})

    def after_step(self) -> None:
        # the paper's min(decay, 1 - 1/(t+1)), on the device: no host sync per step
        decay = (1.0 - 1.0 / (self.ema_steps.float() + 2.0)).clamp(max=self.options.ema_decay)
        ema_update(self.student, self.online, decay)
        self.ema_steps += 1
