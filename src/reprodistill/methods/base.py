"""The Method interface every training method implements, and the registry that names them.

A method is an ``nn.Module`` that owns its trainable parts (student, heads, reprogrammers) and holds the frozen
teacher; ``forward(batch)`` returns a :class:`StepOutput` and the one training loop in :mod:`reprodistill.engine.loop`
does the rest. Adding a method is one new file with ``@register_method(name)`` (see CONTRIBUTING.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import torch
import torch.nn.functional as F
from torch import nn

from reprodistill.config import RunConfig, from_dict
from reprodistill.data.sources import UNLABELLED
from reprodistill.data.transforms import ExtraView, InputSpec, preprocess
from reprodistill.features.fm_pass import FMPass
from reprodistill.features.split import FeatureSplit
from reprodistill.models.student import Student
from reprodistill.models.teacher import Teacher
from reprodistill.registry import Registry

Batch = dict[str, torch.Tensor]


@dataclass
class StepOutput:
    """One training step of a method.

    Attributes:
        loss: The scalar the loop minimises (the method's own weighted sum of ``parts``).
        logits: [B, K] logits of the deployed model on the batch.
        parts: The loss terms *unweighted*, by name; logged to metrics.csv as ``train_<name>`` (detached there).
        weights: Each part's weight at this step (a missing name means 1); logged as ``train_w_<name>``, so a
            column means the same in every method and schedules are visible.
        logged: Other per-step values worth a column (e.g. a scheduled temperature), logged as ``train_<name>``.
        aux: Other tensors of the step (e.g. RD's reprogrammed-FM logits), for tests and subclasses.
    """

    loss: torch.Tensor
    logits: torch.Tensor
    parts: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    weights: dict[str, float] = dataclasses.field(default_factory=dict)
    logged: dict[str, float] = dataclasses.field(default_factory=dict)
    aux: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)

    @classmethod
    def weighted(
        cls,
        logits: torch.Tensor,
        parts: dict[str, torch.Tensor],
        weights: dict[str, float],
        logged: Optional[dict[str, float]] = None,
        aux: Optional[dict[str, torch.Tensor]] = None,
    ) -> StepOutput:
        """The step whose loss is ``sum(weights[k] * parts[k])`` in the order of ``parts`` (a missing weight is 1), so
        the logged weights are the ones the loss used."""
        terms = [weights.get(k, 1.0) * v for k, v in parts.items()]
        loss = terms[0]
        for t in terms[1:]:
            loss = loss + t
        return cls(loss, logits, parts, weights, logged or {}, aux or {})

    def log_values(self) -> dict[str, float]:
        """The step's columns for metrics.csv: parts, their weights (w_<part>) and the other logged values."""
        out = {k: float(v.detach()) for k, v in self.parts.items()}
        out |= {f"w_{k}": float(w) for k, w in self.weights.items()}
        return out | {k: float(v) for k, v in self.logged.items()}


@dataclass
class NoOptions:
    """A method without options of its own."""


@dataclass
class MethodContext:
    """What the engine hands a method when it builds it.

    Attributes:
        cfg: The resolved run config.
        num_classes: K.
        student: A freshly initialised student (None for teacher-only methods such as a linear probe).
        teacher: The frozen teacher, or None if the method does not use one.
        class_weights: Cross-entropy class weights (or None), already on the right device.
        co_teachers: The frozen students of other finished runs on the same images, where the method's options name
            them (``co_teacher``), already on the right device; else empty.
    """

    cfg: RunConfig
    num_classes: int
    student: Optional[Student] = None
    teacher: Optional[Teacher] = None
    class_weights: Optional[torch.Tensor] = None
    co_teachers: tuple[Student, ...] = ()


class Method(nn.Module):
    """Base class. Subclasses set the class attributes and implement :meth:`forward`.

    Class attributes:
        uses_student: The engine builds a student for this method.
        uses_teacher: The engine builds the frozen teacher.
        teacher_features: 'pooled' (vectors) or 'map' (last feature map) if the method reads fixed-view teacher
            features from ``batch['teacher_features']``; the engine computes them once per split (cached on disk)
            instead of running the FM every step.
        reads_batch_features: False if the method reads its feature kind only in :meth:`prepare` (the splits'
            ``teacher_features``), never from a batch: the engine then runs no FM on its batches (no online pass
            every step) and trains it on the ordinary augmentation, not the cached augmented views.
        loop_training: False if :meth:`prepare` fits everything (e.g. a probe solved to convergence), so the
            shared loop is skipped and the prepared state is the result.
        uses_unlabelled: With ``data.unlabelled``, training batches also hold unlabelled images (label
            :data:`~reprodistill.data.sources.UNLABELLED`): :meth:`task_loss` skips them, and every other term of the
            method must either need no label or skip them too.
        Options: Dataclass of method options, filled from ``method_options.<name>`` in the config.
        loss_weights: The option names that weight loss terms (every option named ``*weight`` must be one);
            ``tests/test_method_contract.py`` checks that each reaches the loss.
        caveat: Empty for a method the measurements back; else "experimental" or "not recommended" and the
            measured reason, shown by ``reprodistill list`` and logged when it runs.
        family: What a bench's verdict takes the method for: ``transfer`` (reprodistill's own reprogramming
            methods, compared against the rest), ``kd`` (a KD baseline: also the bar each transfer row is paired
            with) or ``alternative`` (what a user would do otherwise: the student alone, semi-supervised, PEFT).
    """

    name: ClassVar[str] = ""
    uses_student: ClassVar[bool] = True
    uses_teacher: ClassVar[bool] = False
    teacher_features: ClassVar[Optional[str]] = None
    reads_batch_features: ClassVar[bool] = True
    loop_training: ClassVar[bool] = True
    uses_unlabelled: ClassVar[bool] = False
    Options: ClassVar[type] = NoOptions
    loss_weights: ClassVar[tuple[str, ...]] = ()
    # '' for a method the measurements back; else why not to deploy it yet, with the figure (shown by
    # `reprodistill list` and logged when the method runs).
    caveat: ClassVar[str] = ""
    family: ClassVar[str] = "alternative"

    class_weights: Optional[torch.Tensor]  # a buffer
    # Typed as present: a method reads them only when its uses_student / uses_teacher says the engine built them.
    student: Student
    teacher: Teacher

    def __init__(self, ctx: MethodContext, options: Any) -> None:
        super().__init__()
        self.ctx = ctx
        self.options = options
        self.num_classes = ctx.num_classes
        self.student = ctx.student  # type: ignore[assignment]  # None only when uses_student is False
        # Keep the frozen teacher out of this module's parameters/state_dict: it is never trained or checkpointed.
        object.__setattr__(self, "teacher", ctx.teacher)
        self.register_buffer("class_weights", ctx.class_weights, persistent=False)
        # Fraction of training done, in [0, 1]; the loop updates it before every step (for decaying loss weights).
        self.progress = 0.0
        # What prepare() cost in seconds when its work was first done; a prepare that loads stored work sets it
        # (else the engine times the call), so a method's transfer cost does not vanish on a cache hit.
        self.prepare_s: Optional[float] = None
        # Validation rows prepare() recorded (e.g. the teacher heads it chose among), for prepare_curve.csv.
        self.prepare_rows: list[dict[str, Any]] = []
        # Other augmented views of each training image the loop adds to every batch as ``image_<name>`` (built by the
        # data layer, e.g. FixMatch's strong view); the method only declares them.
        self.input_views: dict[str, ExtraView] = {}

    @classmethod
    def parse_options(cls, data: dict[str, Any] | None) -> Any:
        """Validate ``method_options.<name>`` against :attr:`Options`."""
        return from_dict(cls.Options, data or {}, f"method_options.{cls.name}")

    @classmethod
    def feature_kind(cls, options: Any) -> Optional[str]:
        """The cached feature kind the engine hands this method with these ``options`` (in its splits'
        ``teacher_features`` and ``batch['teacher_features']``): :attr:`teacher_features` unless an option
        changes it."""
        return cls.teacher_features

    @classmethod
    def describe_options(cls) -> dict[str, Any]:
        return dataclasses.asdict(cls.Options())

    def prepare(self, train: FeatureSplit, device: torch.device, val: Optional[FeatureSplit] = None) -> None:
        """Called once before training with the train split (an engine ``FeatureSplit``); e.g. fits a teacher probe.

        ``val`` (the validation split) may choose settings such as a probe's regularisation; never the test split.
        Must be deterministic: a resumed run calls it again before loading its checkpoint.
        """

    def prepare_curve(self) -> list[dict[str, Any]]:
        """Validation rows that :meth:`prepare` recorded while it trained or chose something (TDMR's stage 1: one
        row after its head warm-up and each joint epoch, so a user can see whether its budget converged; a
        ``teacher_head`` other than the probe: one row per head fitted, the kept one marked); the engine writes them
        to the method folder's ``prepare_curve.csv``. By default :attr:`prepare_rows`, empty unless set."""
        return self.prepare_rows

    def fm_pass(self, device: torch.device) -> FMPass:
        """Passes of this method's frozen FM over whole data sets, with the run's batch size, workers and cache."""
        return FMPass.from_config(self.teacher, self.ctx.cfg, device)

    def student_input(self, batch: Batch) -> torch.Tensor:
        """The student's preprocessed view of the batch's uint8 images."""
        return preprocess(batch["image"], self.student.spec)

    def task_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy with the run's class weights and label smoothing (the same for every method), over the
        labelled images of the batch only (0 with a gradient path if it has none, e.g. one rank's slice)."""
        known = labels != UNLABELLED
        if not bool(known.all()):
            if not bool(known.any()):
                return logits.sum() * 0.0
            logits, labels = logits[known], labels[known]
        return F.cross_entropy(
            logits, labels, weight=self.class_weights, label_smoothing=self.ctx.cfg.train.label_smoothing
        )

    def on_epoch_start(self, epoch: int) -> None:
        """Called by the loop before each training epoch (0-based; also the first epoch of a resumed run), in
        training mode: e.g. re-fit a label mapping with the current prompt."""

    def after_validation(self, metrics: dict[str, Any]) -> None:
        """Called by the loop after each round's validation with the deployed model's validation metrics (the same
        on every rank), before the round's checkpoint is written: e.g. re-weigh a loss term by what validation
        shows. State it sets for later rounds belongs in a buffer, so a resumed run continues identically."""

    def after_step(self) -> None:
        """Called by the loop after every optimiser step (e.g. to update an EMA copy of the student)."""

    def forward(self, batch: Batch) -> StepOutput:
        """One training step on ``batch``: the loss to minimise, the logits, and the named terms to log."""
        raise NotImplementedError

    def predict(self, batch: Batch) -> torch.Tensor:
        """Logits of the deployed model for a batch (called under eval mode and inference mode).

        Student methods deploy the student alone, so only it runs; others fall back to the training forward.
        """
        if self.uses_student:
            return self.student(self.student_input(batch))
        return self.forward(batch).logits

    def extra_logits(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Named logits of non-deployed branches (e.g. RD's reprogrammed FM), reported beside the student's."""
        return {}

    def deployed(self) -> nn.Module:
        """The model a user would ship after this method: preprocessed input -> logits (for size, FLOPs, latency)."""
        return self.student

    def deployed_spec(self) -> InputSpec:
        """Input preprocessing of :meth:`deployed`."""
        return self.student.spec


METHODS: Registry[type[Method]] = Registry("method")


def register_method(name: str):
    """Class decorator: register a Method subclass under ``name`` and set its ``name``."""

    def wrap(cls: type[Method]) -> type[Method]:
        cls.name = name
        return METHODS.register(name)(cls)

    return wrap
