"""`rd`: Reprogramming Distillation (Zhou et al., MICCAI 2024, arXiv 2407.06504).

The frozen FM's pooled features f_t pass a trainable reprogrammer phi into the student's feature space; ONE linear
classifier g (the student's head) scores both branches, and phi, g and the student train together from the start::

    z_s = g(f_s)            z_t = g(phi(f_t))
    L = w_t CE(z_t, y) + w_s CE(z_s, y) + a_kd T^2 KL(softmax(z_t/T) || softmax(z_s/T)) + a_cka (1 - CKA(phi(f_t), f_s))

Only the student (with g as its head) is deployed. f_t is a fixed view of each image, so the engine computes it
once per split; the student sees the augmented view. Defaults (paper details that are not public are options):
all weights 1, T = 4, z_t detached inside the KL (the KD term teaches the student, not the teacher branch), linear
CKA, one residual block in phi, whose input is standardised with fixed train-set statistics (set in prepare) and
passes dropout 0.5 (``phi_input_dropout``, chosen on validation). ``kd_target=probe`` distils the FM's solved linear
probe instead of the reprogrammed branch (an ablation). ``teacher_calibration=val`` divides the branch's KD target
by a temperature fitted on the validation split at each round (its raw margins are ~60, so at T = 4 it teaches
hard labels).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Optional, Union

import torch

from reprodistill.data.sources import UNLABELLED
from reprodistill.data.transforms import preprocess
from reprodistill.features.split import FeatureSplit, split_teacher_features
from reprodistill.losses import fit_logit_scale, kd_loss, kd_rows, mixture_target_logits
from reprodistill.methods.base import Batch, Method, MethodContext, StepOutput, register_method
from reprodistill.methods.cka_term import CKAOptions
from reprodistill.methods.consistency import (
    ConsistencyOptions,
    StrongViewConsistency,
    optional_consistency,
    student_features,
)
from reprodistill.methods.probe_fit import TeacherHeadOptions, fit_probe
from reprodistill.models import Student
from reprodistill.reprogram import FeatureReprogrammer
from reprodistill.reprogram.probe import StandardisedLinear
from reprodistill.util.metrics import SATURATED_AUC, classification_metrics


@dataclass
class RDOptions(ConsistencyOptions, CKAOptions, TeacherHeadOptions):  # teacher_head: with kd_target=probe
    # a share of the KD target, not a loss weight (options named *_weight weigh loss terms): cells written before
    # the rename read as before
    RENAMED: ClassVar[dict[str, str]] = {"co_teacher_weight": "co_teacher_share"}
    teacher_ce_weight: float = 1.0
    student_ce_weight: float = 1.0
    kd_weight: float = 1.0
    temperature: float = 4.0
    # Detach z_t in the KL term so KD only moves the student (and g through z_s).
    detach_teacher_logits: bool = True
    # What the KD term distils: 'branch' (the paper: the reprogrammed FM g(phi(f_t))) or 'probe' (the FM's linear
    # probe, solved before training with its L2 chosen on validation, as in `kd`; phi, its CE and CKA still train):
    # the ablation that asks whether RD's reprogrammed teacher beats the probe as a KD teacher.
    kd_target: Literal["branch", "probe"] = "branch"
    phi_blocks: int = 1
    phi_hidden: Optional[int] = None
    phi_dropout: float = 0.0
    # Dropout on phi's (standardised) FM input features: a few hundred images cannot pin down a 2048+ -> d_s map.
    # 0.5 chosen on validation AUC at 10% data on both data sets (docs/results.md, "RD variants" and "the old quick
    # preset ...: RD input dropout and probe target").
    phi_input_dropout: float = 0.5
    # The branch's logits grow without bound under its CE (median margin ~60 on PneumoniaMNIST 10% against ~5.5 for
    # the L2-regularised probe), so KD at T = 4 hands the student hard labels. 'val' rescales the KD target by a
    # temperature fitted on the validation split (class-weighted NLL, never sharpening) before each round. Off by
    # default: on BreastMNIST 10% + unlabelled images it lowered the student's validation AUC on every seed
    # (docs/results.md, "RD variants", rd-unl-cal). Untested guess at why: the near-hard targets act as pseudo-labels
    # on the unlabelled images.
    teacher_calibration: Literal["none", "val"] = "none"
    # The student's view of an unlabelled image in the KD term: 'weak' (the paper: the view every term sees) or
    # 'strong' (its RandAugment + Cutout view, as FixMatch / Noisy Student: the reprogrammed FM's prediction on the
    # fixed view teaches the student's prediction on a heavily augmented one). Labelled images keep the weak view.
    kd_student_view: Literal["weak", "strong"] = "weak"
    # With FixMatch's term inside (consistency_weight > 0): how the unlabelled images' KD term (the teacher) and
    # FixMatch's term (the student's own pseudo-labels) share them. 'fixed': each at its weight. 'val': after every
    # validation round the teacher's share s in [0, 1] follows how well the reprogrammed branch ranks the validation
    # images against the student (AUC; balanced accuracy where both exceed 0.99),
    # s = clip(0.5 + (m_branch - m_student) / (2 share_margin), 0, 1), and the unlabelled KD term is weighted s, the
    # FixMatch term (1 - s) consistency_weight (s = 1 before the first round). Why: with both at fixed weights the
    # branch's near-hard targets make the student confident on most unlabelled images, so FixMatch's threshold no
    # longer filters and its pseudo-labels only echo a teacher no more accurate than the student (measured with
    # benchmarks/unlabelled_targets.py: docs/measured.md, "the combined method"). Labelled images keep their KD term.
    # 'anneal': teacher annealing (Clark et al., ACL 2019, arXiv 1907.04829) on the unlabelled images,
    # s = 1 - (fraction of training done): the teacher leads early, the student's own pseudo-labels late. Why: at a
    # long budget FixMatch keeps improving while every RD row stops at its teacher's level (docs/measured.md, the
    # budget bench), so the teacher should hand over rather than cap the student.
    teacher_share: Literal["fixed", "val", "anneal"] = "fixed"
    share_margin: float = 0.05
    # A second teacher: the student another finished run trained on the same images (a run folder; in a bench
    # 'cell:<row>', e.g. cell:fixmatch-unl@1500, the same seed's cell of that row), frozen, scoring the very view the
    # student sees. The KD target becomes the mixture (1 - w) softmax(z_t / T) + w softmax(z_co / T), w =
    # co_teacher_share: the FM's knowledge and a semi-supervised student's in one target. Why: on the decisive
    # benches RD's and FixMatch's students err on different images (the mean of their predicted probabilities
    # ranks the test images better than either, on both data sets: docs/measured.md, "the two students together"),
    # and a deployed student can be only one of them.
    # Several runs (a list) are one ensemble: each gets an equal part of w.
    co_teacher: Union[None, str, list[str]] = None
    co_teacher_share: float = 0.5


@register_method("rd")
class ReprogrammingDistillation(Method):
    family = "transfer"
    uses_teacher = True
    teacher_features = "pooled"
    uses_unlabelled = True  # CE terms skip unlabelled images; KD and CKA use them all
    Options = RDOptions
    loss_weights = ("teacher_ce_weight", "student_ce_weight", "kd_weight", "cka_weight", "consistency_weight")
    teacher_share: torch.Tensor  # a buffer (teacher_share=val only)

    def __init__(self, ctx: MethodContext, options: RDOptions) -> None:
        super().__init__(ctx, options)
        self.phi = FeatureReprogrammer(
            self.teacher.feature_dim,
            self.student.feature_dim,
            options.phi_hidden,
            options.phi_blocks,
            options.phi_dropout,
            options.phi_input_dropout,
        )
        if options.teacher_head != "probe" and options.kd_target != "probe":
            raise ValueError(f"rd: teacher_head={options.teacher_head} chooses the probe RD distils with "
                             "kd_target=probe; set it, or drop teacher_head")  # fmt: skip
        if options.kd_target == "probe":
            self.probe = StandardisedLinear(self.teacher.feature_dim, ctx.num_classes).requires_grad_(False)
        # 1/T of the branch's KD target; recomputed from the weights before every round, so not checkpointed. A
        # host float, not a buffer: forward multiplies and logs it without a device sync.
        self.kd_target_scale = 1.0
        self._calibration: Optional[tuple[torch.Tensor, torch.Tensor]] = None
        # FixMatch's term on the unlabelled images, and/or their strong views in the KD term
        self.consistency = optional_consistency(options, ctx.cfg.train)
        self.strong = self.consistency
        if self.strong is None and options.kd_student_view == "strong":
            self.strong = StrongViewConsistency(options.consistency_threshold, ctx.cfg.train)
        if self.strong is not None:
            self.input_views = {"strong": self.strong.view}
        self._val: Optional[tuple[torch.Tensor, torch.Tensor]] = None  # fixed-view FM features, labels
        if options.teacher_share != "fixed" and self.consistency is None:
            raise ValueError(f"rd: teacher_share={options.teacher_share} shares the unlabelled images with FixMatch's "
                             "term; set consistency_weight > 0 (e.g. 1)")  # fmt: skip
        if options.co_teacher and not 0.0 <= options.co_teacher_share <= 1.0:
            raise ValueError(f"rd: co_teacher_share must be in [0, 1], got {options.co_teacher_share}")
        if options.co_teacher and options.kd_student_view == "strong":
            raise ValueError("rd: co_teacher scores the student's weak view; it does not combine with "
                             "kd_student_view=strong")  # fmt: skip
        if options.co_teacher and options.kd_target == "probe":
            raise ValueError("rd: co_teacher mixes with the reprogrammed branch's target; drop kd_target=probe")
        # a plain attribute, not a submodule (nn.Module would register it): frozen, never checkpointed with the
        # method, never switched to train mode, moved to the device by the engine
        self._co_teachers: tuple[Student, ...]
        object.__setattr__(self, "_co_teachers", ctx.co_teachers if options.co_teacher else ())
        if options.co_teacher and not self._co_teachers:
            raise ValueError(f"rd: co_teacher={options.co_teacher} was not loaded (the engine loads it)")
        if options.teacher_share == "val":
            # the teacher's share of the unlabelled images, set after each validation round (checkpointed)
            self.register_buffer("teacher_share", torch.tensor(1.0))
        self._share = 1.0  # the buffer's value as a host float (teacher_share=val), so a step reads it without a sync

    def prepare(self, train: FeatureSplit, device: torch.device, val: Optional[FeatureSplit] = None) -> None:
        if self.options.kd_target == "probe":
            feats = fit_probe(self, self.probe, train, val, device)
        else:
            feats, _ = split_teacher_features(train, self.fm_pass(device))
        self.phi.fit_statistics(feats)
        if self.options.teacher_calibration == "val" or self.options.teacher_share == "val":
            if val is None:
                raise ValueError("rd: teacher_calibration=val and teacher_share=val need the validation split")
            self._val = split_teacher_features(val, self.fm_pass(device))
        if self.options.teacher_calibration == "val":
            self._calibration = self._val

    def on_epoch_start(self, epoch: int) -> None:
        if self.options.teacher_share == "val":  # the buffer (a resumed run's too) read once a round, not every step
            self._share = float(self.teacher_share)
        if self._calibration is None:
            return
        z_t, labels = self._branch_on_val()
        self.kd_target_scale = fit_logit_scale(z_t, labels, self.class_weights)

    def after_validation(self, metrics: dict[str, Any]) -> None:
        if self.options.teacher_share != "val":
            return
        z_t, labels = self._branch_on_val()
        branch = classification_metrics(torch.log_softmax(z_t.float(), -1).cpu().numpy(), labels.cpu().numpy())
        key = "balanced_accuracy" if min(branch["auc"], metrics["auc"]) >= SATURATED_AUC else "auc"
        gap = float(branch[key]) - float(metrics[key])
        self._share = min(1.0, max(0.0, 0.5 + gap / (2 * self.options.share_margin)))
        self.teacher_share.fill_(self._share)

    def _branch_on_val(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(the reprogrammed branch's validation logits as it predicts, without input dropout; the labels)."""
        assert self._val is not None
        feats, labels = self._val
        was_training = self.phi.training
        self.phi.eval()
        with torch.no_grad():
            z_t = self.extra_logits({"teacher_features": feats})["reprogrammed_fm"]
        self.phi.train(was_training)
        return z_t, labels

    def train(self, mode: bool = True) -> "ReprogrammingDistillation":
        super().train(mode)
        if self.options.kd_target == "probe":
            self.probe.eval()  # a solved, frozen teacher head
        return self

    def forward(self, batch: Batch) -> StepOutput:
        o = self.options
        g = self.student.head
        x = self.student_input(batch)
        f_s, f_strong = student_features(self.strong, self.student, x, batch)
        z_s = g(f_s)
        r_t = self.phi(batch["teacher_features"])
        z_t = g(r_t)
        y = batch["label"]
        strong = None if f_strong is None else g(f_strong)
        target = self._kd_target(batch["teacher_features"], z_t)
        if self._co_teachers:
            target = self._with_co_teachers(target, batch, x)
        unl = y == UNLABELLED
        kd_student = z_s
        if o.kd_student_view == "strong" and strong is not None:  # unlabelled rows: their strong views' logits
            kd_student, target = torch.cat([z_s[~unl], strong]), torch.cat([target[~unl], target[unl]])
            unl = torch.cat([unl[~unl], unl[unl]])
        share = 1.0 - self.progress if o.teacher_share == "anneal" else self._share
        parts = {
            "ce_teacher": self.task_loss(z_t, y),
            "ce_student": self.task_loss(z_s, y),
            "kd": kd_loss(kd_student, target, o.temperature)
            if share == 1.0
            else _shared_kd(kd_student, target, unl, share, o.temperature),  # fmt: skip
            "cka": o.cka_term(r_t, f_s),
        }
        weights = {"ce_teacher": o.teacher_ce_weight, "ce_student": o.student_ce_weight, "kd": o.kd_weight,
                   "cka": o.cka_weight}  # fmt: skip
        logged = {"teacher_T": 1.0 / self.kd_target_scale} if self._calibration is not None else {}
        if self.consistency is not None:
            parts["consistency"], logged["mask_rate"] = self.consistency.loss(z_s, strong, y)
            weights["consistency"] = o.consistency_weight * (1.0 - share if o.teacher_share != "fixed" else 1.0)
        if o.teacher_share != "fixed":
            logged["teacher_share"] = share
        return StepOutput.weighted(z_s, parts, weights, logged=logged, aux={"teacher_logits": z_t})

    def _kd_target(self, f_t: torch.Tensor, z_t: torch.Tensor) -> torch.Tensor:
        if self.options.kd_target == "probe":
            return self.probe(f_t)
        return (z_t.detach() if self.options.detach_teacher_logits else z_t) * self.kd_target_scale

    def _with_co_teachers(self, target: torch.Tensor, batch: Batch, x: torch.Tensor) -> torch.Tensor:
        """The KD target mixed with the co-teachers' on the student's view (weight w, split equally among them), as
        logits whose softmax at T is the mixture (:func:`mixture_target_logits`); ``x`` is the student's
        preprocessed view, reused by a co-teacher with the same input spec."""
        with torch.no_grad():
            z_co = [co(x if co.spec == self.student.spec else preprocess(batch["image"], co.spec))
                    for co in self._co_teachers]  # fmt: skip
        w = self.options.co_teacher_share
        weights = [1.0 - w] + [w / len(z_co)] * len(z_co)
        return mixture_target_logits([target, *z_co], weights, self.options.temperature)

    def extra_logits(self, batch: Batch) -> dict[str, Any]:
        return {"reprogrammed_fm": self.student.head(self.phi(batch["teacher_features"]))}


def _shared_kd(
    student: torch.Tensor, target: torch.Tensor, unlabelled: torch.Tensor, share: float, temperature: float
) -> torch.Tensor:
    """The KD term over the batch with each unlabelled row weighted ``share`` (labelled rows 1), as a mean over rows
    (so ``share = 1`` is :func:`kd_loss` itself)."""
    weights = torch.where(unlabelled, share, 1.0).to(student.device)
    return (kd_rows(student, target, temperature) * weights).mean()
