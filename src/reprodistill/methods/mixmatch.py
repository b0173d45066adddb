"""`mixmatch`: the student alone plus MixMatch on the unlabelled images (Berthelot et al., NeurIPS 2019, arXiv
1905.02249), no FM: the semi-supervised method that was the most reliable of 13 on medical images under realistic
validation (Huang et al., CVPR 2024, arXiv 2307.08919).

Each step: every unlabelled image's label is guessed as the sharpened (``temperature`` 0.5) mean prediction over
``augmentations`` (K = 2) weak views; the labelled images (one-hot targets) and the K views of the unlabelled ones
(the guess as target) are MixUp-ed among themselves (``lambda' = max(lambda, 1 - lambda)``, ``lambda ~ Beta(alpha,
alpha)``, alpha 0.75); then ``L = CE(mixed labelled rows, mixed targets) + unlabelled_weight * ramp *
MSE(softmax(mixed unlabelled rows), mixed targets)``, the weight ramped up linearly over the first ``rampup`` of
training (the paper: 16,000 of ~1M steps, 1.5%; its weight 100 except CIFAR-10's 75). The CE uses the run's class
weights and label smoothing, like every other method's task loss. Without unlabelled images it is MixUp on the labels.
The paper's EMA of the weights is for evaluation only and left out (as USB's default does for every method here).
With imbalanced classes the weight matters: the guesses lean to the majority class and sharpening hardens that, so at
the paper's weight the unlabelled term can pull every prediction to one class (seen on BreastMNIST 10%, 73% one
class, at weights 10-100; results/breast-10-mixmatch-weight): choose it on validation (the presets' mixmatch-unl-w1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from reprodistill.data.sources import UNLABELLED
from reprodistill.data.transforms import ExtraView, preprocess
from reprodistill.losses import linear_rampup, mixup_pairs, probability_mse, sharpen
from reprodistill.methods.base import Batch, Method, MethodContext, StepOutput, register_method


@dataclass
class MixMatchOptions:
    unlabelled_weight: float = 100.0
    temperature: float = 0.5
    alpha: float = 0.75
    # K weak views of each unlabelled image whose mean prediction is its guessed label (each one more student forward)
    augmentations: int = 2
    # share of training over which the unlabelled weight ramps up linearly from 0
    rampup: float = 0.015


@register_method("mixmatch")
class MixMatch(Method):
    uses_unlabelled = True  # the labelled term reads labels of labelled rows only; the guessed labels need none
    Options = MixMatchOptions
    loss_weights = ("unlabelled_weight",)

    def __init__(self, ctx: MethodContext, options: MixMatchOptions) -> None:
        super().__init__(ctx, options)
        if options.augmentations < 1 or options.temperature <= 0 or options.alpha <= 0:
            raise ValueError(
                "method_options.mixmatch: augmentations must be >= 1, temperature and alpha > 0 "
                f"(got {options.augmentations}, {options.temperature}, {options.alpha})"
            )
        t = ctx.cfg.train
        # the loop's own weak view is the first; each further one is another draw of the same shift / flip
        self.input_views = {f"weak{k}": ExtraView(False, t.augment_shift, t.augment_flip)
                            for k in range(1, options.augmentations)}  # fmt: skip

    def guess_labels(self, logits: torch.Tensor, batch: Batch, unlabelled: torch.Tensor) -> torch.Tensor:
        """[U,K] sharpened mean prediction over the K weak views of the batch's unlabelled images (no gradient);
        ``logits`` are the student's on the first view of the whole batch."""
        probs = logits[unlabelled].float().softmax(-1)
        if self.input_views:
            extra = torch.cat(
                [preprocess(batch[f"image_{n}"][unlabelled], self.student.spec) for n in self.input_views]
            )
            probs = probs + self.student(extra).float().softmax(-1).view(len(self.input_views), -1, probs.shape[1]).sum(
                0
            )
        return sharpen(probs / self.options.augmentations, self.options.temperature)

    def forward(self, batch: Batch) -> StepOutput:
        o, labels = self.options, batch["label"]
        known, unlabelled = labels != UNLABELLED, labels == UNLABELLED
        x = self.student_input(batch)
        with torch.no_grad():  # the label guess (train mode, as in the paper: BatchNorm sees these views too)
            logits = self.student(x)
            guess = self.guess_labels(logits, batch, unlabelled) if bool(unlabelled.any()) else None
        inputs = [x[known]]
        targets = [F.one_hot(labels[known], self.num_classes).float()]
        if guess is not None:
            inputs.append(x[unlabelled])
            inputs += [preprocess(batch[f"image_{n}"][unlabelled], self.student.spec) for n in self.input_views]
            targets += [guess] * o.augmentations
        mixed, mixed_targets = mixup_pairs(torch.cat(inputs), torch.cat(targets), o.alpha)
        out = self.student(mixed)
        n_l = int(known.sum())
        if n_l:
            ce = F.cross_entropy(out[:n_l], mixed_targets[:n_l], weight=self.class_weights,
                                 label_smoothing=self.ctx.cfg.train.label_smoothing)  # fmt: skip
        else:
            ce = out.sum() * 0.0
        unsup = probability_mse(out[n_l:], mixed_targets[n_l:]) if guess is not None else out.sum() * 0.0
        weight = o.unlabelled_weight * linear_rampup(self.progress, o.rampup)
        return StepOutput.weighted(logits, {"ce": ce, "unlabelled": unsup}, {"unlabelled": weight})
