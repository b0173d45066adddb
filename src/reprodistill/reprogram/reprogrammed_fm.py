"""A reprogrammed foundation model (TDMR's stage 1, Xu et al., arXiv 2304.02263): a visual prompt in the frozen FM's
pixel space, the FM, a projection of its pooled features into a task proxy space, and a classifier there; or, for
an FM with its own class head, that head through a label mapping. :meth:`ReprogrammedFM.fit` trains it.

The FM itself is held, never a submodule: it is not trained and not in the state dict.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional, Protocol

import torch
from torch import nn
from tqdm.autonotebook import tqdm

from reprodistill.errors import ConfigError
from reprodistill.models.teacher import Teacher
from reprodistill.reprogram.label_map import MappedHead
from reprodistill.reprogram.probe import batchnorm_head
from reprodistill.reprogram.prompt import VisualPrompt
from reprodistill.util.metrics import classification_metrics

log = logging.getLogger("reprodistill")


class FMPasses(Protocol):
    """What :meth:`ReprogrammedFM.fit` needs from :class:`reprodistill.features.fm_pass.FMPass` (a layer above)."""

    device: torch.device

    def features(self, dataset: Any, kind: str = "pooled", desc: str = "", fn: Any = None) -> torch.Tensor: ...


@dataclass
class Stage1Budget:
    head_epochs: int = 30  # warm-up of projection + classifier on the initial prompt's features (no FM backward)
    epochs: int = 5  # joint passes over the training split, gradients through the frozen FM to the prompt
    max_steps: Optional[int] = None  # cap on the joint steps
    lr: float = 1e-3
    batch_size: int = 64


@dataclass
class ValidationSet:
    """The validation images of stage 1's curve, their labels, and their fixed-view FM features when no prompt
    trains (then they serve every point of the curve)."""

    dataset: Any
    labels: torch.Tensor
    fixed: Optional[torch.Tensor] = None


class ReprogrammedFM(nn.Module):
    """Prompt -> frozen FM -> projection -> classifier (or the FM's own head through a label mapping)."""

    teacher: Teacher  # held, not a submodule

    def __init__(
        self,
        teacher: Teacher,
        num_classes: int,
        prompt: Literal["padding", "additive", "none"] = "padding",
        pad: Optional[int] = None,
        resize: str = "fixed",
        output: str = "projection",
        label_map: str = "iterative",
        proxy: str = "auto",
        proxy_dim: int = 256,
    ) -> None:
        super().__init__()
        object.__setattr__(self, "teacher", teacher)  # frozen: not a submodule
        d_t = teacher.feature_dim
        self.prompt: Optional[VisualPrompt] = None
        if prompt != "none":
            self.prompt = VisualPrompt(teacher.spec, prompt, pad, learnable_resize=resize == "learnable")
        self.label_mapped = output == "label_map"
        self.label_map = label_map
        head = teacher.class_head()
        if self.label_mapped and head is None:
            raise ConfigError(
                f"tdmr output=label_map needs an FM with its own class head; {teacher.name} has none "
                "(use output=projection, or an FM such as efficientnet_lite0)"
            )
        proxy = proxy if proxy != "auto" else ("none" if self.label_mapped else "linear")
        if self.label_mapped and proxy == "linear":
            raise ConfigError("tdmr output=label_map scores the task with the FM's own head, so a proxy projection "
                              "would never train; use proxy=none or proxy=auto")  # fmt: skip
        if proxy == "linear":
            self.projection: nn.Module = batchnorm_head(d_t, proxy_dim)
            self.proxy_dim = proxy_dim
        else:
            self.projection = nn.BatchNorm1d(d_t, affine=False)
            self.proxy_dim = d_t
        self.classifier: nn.Module = (
            MappedHead(head, num_classes)
            if head is not None and self.label_mapped
            else nn.Linear(self.proxy_dim, num_classes)
        )
        self.steps = 0  # joint (prompt) steps the last fit took
        # the last fit's validation curve: {'epoch', 'steps', 'val_loss', 'val_accuracy', 'val_auc'} after the head
        # warm-up (epoch 0) and after every joint epoch
        self.curve: list[dict[str, float]] = []

    def parts(self) -> list[nn.Module]:
        """The trainable parts, in a fixed order (prompt if any, projection, classifier)."""
        return [m for m in (self.prompt, self.projection, self.classifier) if m is not None]

    def fm_input(self, images: torch.Tensor) -> torch.Tensor:
        return self.prompt(images) if self.prompt is not None else self.teacher.prepare(images)

    def fm_features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled features of the (prompted) FM of uint8 images, with gradients to the prompt when it trains."""
        return self.teacher(self.fm_input(images)).float()

    def forward(self, f_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(proxy features, task logits) of pooled FM features; a label-mapped FM scores its own features."""
        z = self.projection(f_t)
        return z, self.classifier(f_t if self.label_mapped else z)

    def _map_labels(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """(Re-)fit the label mapping of the FM's own head to the features under the current prompt."""
        assert isinstance(self.classifier, MappedHead)
        self.classifier.fit(features, labels)

    def freeze(self) -> None:
        for m in self.parts():
            m.eval()
            m.requires_grad_(False)

    def prompted_features(self, dataset: Any, fm: FMPasses) -> torch.Tensor:
        """Pooled FM features of every image of ``dataset`` under the current prompt (one pass, no backward)."""
        # clone: a plain tensor (the pass runs in inference mode), as the training steps index it under autograd
        return fm.features(dataset, desc="tdmr prompted FM", fn=self.fm_features).to(fm.device).clone()

    def fit(
        self,
        dataset: Any,
        labels: torch.Tensor,
        fm: FMPasses,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        budget: Stage1Budget,
        seed: int,
        fixed: Optional[torch.Tensor] = None,
        val: Optional[ValidationSet] = None,
    ) -> torch.Tensor:
        """Train the reprogrammed FM on ``dataset`` (``loss_fn(logits, labels)``), freeze it, and return the pooled
        FM features of every image under the final prompt. ``fixed``: without a prompt nothing before the FM
        trains, so the FM's fixed-view features (one cached pass) serve every step. ``val``: after the head warm-up
        and after every joint epoch the validation loss and accuracy go to :attr:`curve` (an FM pass over it each
        time, no backward, unless its fixed features serve), to show whether the budget converged."""
        device = fm.device
        n = len(dataset)
        images = lambda idx: torch.stack([dataset[int(i)]["image"] for i in idx]).to(device)  # noqa: E731
        params = [p for m in self.parts() for p in m.parameters()]
        opt = torch.optim.AdamW(params, lr=budget.lr, weight_decay=1e-4) if params else None
        gen = torch.Generator().manual_seed(seed)
        for m in self.parts():
            m.train()
        need_warm = budget.head_epochs or self.label_mapped
        warm = fixed if fixed is not None else self.prompted_features(dataset, fm) if need_warm else None
        if warm is not None:
            self._warm_up(warm, labels, opt, loss_fn, budget, gen)
        self.curve = []
        best = self._record(val, fm, loss_fn, 0)
        max_steps = budget.max_steps if budget.max_steps is not None else float("inf")
        if opt is None:  # a label-mapped FM without a prompt: nothing trains, the mapping is all of stage 1
            max_steps = 0
        self.steps = 0
        bar = tqdm(total=int(min(budget.epochs * -(-n // budget.batch_size), max_steps)), desc="tdmr stage 1",
                   unit="step", leave=False, disable=None)  # fmt: skip
        for epoch in range(budget.epochs):
            if self.label_mapped and self.label_map == "iterative" and epoch > 0 and self.steps < max_steps:
                self._map_labels(self.prompted_features(dataset, fm), labels)  # ILM: re-map with this prompt
            for idx in torch.randperm(n, generator=gen).split(budget.batch_size):
                if self.steps >= max_steps:
                    break
                if len(idx) < 2:  # BatchNorm needs two samples
                    continue
                f_t = fixed[idx] if fixed is not None else self.fm_features(images(idx))
                loss = self._step(opt, loss_fn, f_t, labels[idx].to(device))
                self.steps += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}")
            if self.steps and (not self.curve or self.curve[-1]["steps"] < self.steps):
                if (state := self._record(val, fm, loss_fn, epoch + 1)) is not None:
                    best = state
        bar.close()
        log.info("tdmr: stage 1 trained for %d steps", self.steps)
        if best is not None and self.curve:  # the state validation prefers, the warm-up's included
            kept = max(self.curve, key=lambda r: (r["val_auc"], -r["val_loss"]))
            for m, sd in zip(self.parts(), best, strict=True):
                m.load_state_dict(sd)
            for r in self.curve:
                r["kept"] = float(r is kept)
            log.info("tdmr: stage 1 keeps its state after epoch %d of %d (%d joint steps; val AUC %.4f, best of the "
                     "curve)", kept["epoch"], budget.epochs, kept["steps"], kept["val_auc"])  # fmt: skip
        self.freeze()
        return fixed if fixed is not None else self.prompted_features(dataset, fm)

    def _warm_up(
        self,
        warm: torch.Tensor,
        labels: torch.Tensor,
        opt: Optional[torch.optim.Optimizer],
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        budget: Stage1Budget,
        gen: torch.Generator,
    ) -> None:
        """Before any prompt step, on the features under the initial prompt (no FM backward): the label mapping and
        the proxy space's statistics (label-mapped), or ``budget.head_epochs`` of projection + classifier."""
        if self.label_mapped:  # FLM / first ILM mapping
            assert isinstance(self.projection, nn.BatchNorm1d)
            self._map_labels(warm, labels)
            assert self.projection.running_mean is not None and self.projection.running_var is not None
            self.projection.running_mean.copy_(warm.mean(0))
            self.projection.running_var.copy_(warm.var(0))
            return
        for _ in range(budget.head_epochs):
            for idx in torch.randperm(len(warm), generator=gen).split(budget.batch_size):
                if len(idx) >= 2:  # BatchNorm needs two samples
                    self._step(opt, loss_fn, warm[idx], labels[idx].to(warm.device))

    def _record(
        self,
        val: Optional[ValidationSet],
        fm: FMPasses,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        epoch: int,
    ) -> Optional[list[dict[str, torch.Tensor]]]:
        """Append the validation loss, accuracy and AUC of the reprogrammed FM as it is now to :attr:`curve`; returns
        a copy of its state when it is the best so far on validation (AUC, then loss), else None."""
        if val is None:
            return None
        was = [m.training for m in self.parts()]
        for m in self.parts():
            m.eval()
        f_t = val.fixed if val.fixed is not None else self.prompted_features(val.dataset, fm)
        with torch.no_grad():
            logits = self(f_t.to(fm.device))[1]
            y = val.labels.to(fm.device)
            loss = float(loss_fn(logits, y))
            # the validation metrics the bench ranks on: a loss that rises while the ranking holds is overconfidence
            scores = classification_metrics(logits.float().log_softmax(1).cpu().numpy(), y.cpu().numpy())
        for m, w in zip(self.parts(), was):
            m.train(w)
        acc, auc = scores["accuracy"], scores["auc"]
        improved = all((auc, -loss) > (r["val_auc"], -r["val_loss"]) for r in self.curve)
        self.curve.append({"epoch": epoch, "steps": self.steps, "val_loss": loss, "val_accuracy": acc, "val_auc": auc})
        log.info("tdmr stage 1, epoch %d (%d joint steps): val loss %.4f, val acc %.4f, val AUC %.4f", epoch,
                 self.steps, loss, acc, auc)  # fmt: skip
        return [copy.deepcopy(m.state_dict()) for m in self.parts()] if improved else None

    def _step(
        self,
        opt: Optional[torch.optim.Optimizer],
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        f_t: torch.Tensor,
        labels: torch.Tensor,
    ) -> float:
        loss = loss_fn(self(f_t)[1], labels)
        assert opt is not None  # a step is only taken when something trains
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()
