"""`flexmatch`: FixMatch with curriculum pseudo-labelling (Zhang et al., NeurIPS 2021, arXiv 2110.08263), no FM:
the fix for FixMatch's slow start with few labels, where a fixed 0.95 threshold lets few unlabelled images teach.

Each class c gets its own threshold ``tau * M(beta_c)``, ``M(x) = x / (2 - x)``, where ``beta_c`` is how many
unlabelled images the class currently wins with confidence above ``tau`` (each image's last such prediction is
remembered), relative to the best class or, during the warm-up, to the images not won yet: early on every threshold
is low and most images teach; as the model learns, well-learnt classes approach ``tau`` while hard classes keep a
lower bar. Otherwise FixMatch: the weak view's prediction where it passes is the hard pseudo-label of the strong view
(RandAugment + Cutout), ``L = CE(labelled) + unlabelled_weight * mean_u[mask * CE(strong, pseudo)]``. Defaults as in
the paper and USB (tau 0.95, warm-up on, weight 1).

The per-image memory and ``beta`` are buffers (checkpointed: a resumed run goes on where it stopped). Under DDP each
process remembers the images of its own slices only, so the thresholds of W processes differ slightly from one's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from reprodistill.data.sources import UNLABELLED
from reprodistill.features.split import FeatureSplit
from reprodistill.losses import fixmatch_loss, flexmatch_class_thresholds
from reprodistill.methods.base import Batch, Method, MethodContext, StepOutput, register_method
from reprodistill.methods.consistency import StrongViewConsistency
from reprodistill.methods.fixmatch import FixMatchOptions

NOT_UNLABELLED = -2  # a labelled image's slot in the memory: never counted


@dataclass
class FlexMatchOptions(FixMatchOptions):
    # the threshold warm-up: images not won by any class yet count as a class of their own
    warmup: bool = True


@register_method("flexmatch")
class FlexMatch(Method):
    uses_unlabelled = True  # CE skips unlabelled images; the pseudo-label term uses only them
    Options = FlexMatchOptions
    loss_weights = ("unlabelled_weight",)

    selected: torch.Tensor  # a buffer: per training image, the class it last passed tau with (-1 never)
    learning_effect: torch.Tensor  # a buffer: beta_c

    def __init__(self, ctx: MethodContext, options: FlexMatchOptions) -> None:
        super().__init__(ctx, options)
        self.consistency = StrongViewConsistency(options.threshold, ctx.cfg.train, options.n_ops, options.cutout)
        self.input_views = {"strong": self.consistency.view}
        self.register_buffer("selected", torch.empty(0, dtype=torch.long))
        self.register_buffer("learning_effect", torch.zeros(ctx.num_classes))

    def prepare(self, train: FeatureSplit, device: torch.device, val: Optional[FeatureSplit] = None) -> None:
        """Sizes the memory to the training split: -1 (not won yet) for each unlabelled image."""
        labels = torch.as_tensor(train.dataset.split.labels, dtype=torch.long)
        self.selected = torch.where(labels == UNLABELLED, -1, NOT_UNLABELLED).to(device)
        self.learning_effect = torch.zeros(self.num_classes, device=device)

    def class_thresholds(self) -> torch.Tensor:
        """[K] the current threshold of each class, ``tau * beta / (2 - beta)``."""
        beta = self.learning_effect
        return self.options.threshold * beta / (2.0 - beta)

    @torch.no_grad()
    def remember(self, weak_logits: torch.Tensor, index: torch.Tensor) -> None:
        """Records the classes the batch's unlabelled images win above tau and updates ``beta``."""
        conf, pseudo = weak_logits.float().softmax(-1).max(-1)
        passed = conf >= self.options.threshold
        self.selected[index[passed]] = pseudo[passed]
        pool = self.selected[self.selected != NOT_UNLABELLED]
        self.learning_effect = flexmatch_class_thresholds(
            pool, self.num_classes, self.learning_effect, self.options.warmup
        )

    def forward(self, batch: Batch) -> StepOutput:
        labels = batch["label"]
        f_weak, f_strong = self.consistency.features(self.student, self.student_input(batch), batch)
        logits = self.student.head(f_weak)
        parts = {"ce": self.task_loss(logits, labels)}
        logged = {"mask_rate": 0.0, "threshold_mean": float(self.class_thresholds().mean())}
        if f_strong is None:
            parts["unlabelled"] = logits.sum() * 0.0
        else:
            unlabelled = labels == UNLABELLED
            weak = logits[unlabelled]
            # the thresholds from the memory before this batch (USB: mask first, then update)
            parts["unlabelled"], mask = fixmatch_loss(weak, self.student.head(f_strong), self.class_thresholds())
            logged["mask_rate"] = float(mask.mean())
            if self.training and len(self.selected):
                self.remember(weak.detach(), batch["index"][unlabelled])
        return StepOutput.weighted(logits, parts, {"unlabelled": self.options.unlabelled_weight}, logged=logged)
