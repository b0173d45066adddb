"""Solving a method's linear probe on the frozen FM's features: the `linear_probe` baseline, the KD baselines' teacher
and RD's probe target all use it; :class:`TeacherHeadOptions` lets them learn it from the unlabelled images too."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from reprodistill.data.sources import UNLABELLED
from reprodistill.features.split import FeatureSplit, split_teacher_features
from reprodistill.methods.base import Method
from reprodistill.reprogram.probe import StandardisedLinear
from reprodistill.reprogram.teacher_heads import Features, TeacherHeadKind, fit_teacher_head


@dataclass
class TeacherHeadOptions:
    # The linear head on the frozen FM's pooled features: 'probe' (the labelled images only), 'self_train' (refitted
    # on the unlabelled images it is confident on), 'label_prop' (refitted on labels spread over the FM's kNN graph
    # of labelled + unlabelled images), 'ensemble' (the mean of the three) or 'val' (the one of the four that ranks
    # the validation images best; every candidate's validation figures go to the method's prepare_curve.csv). All but
    # 'probe' need data.unlabelled (reprogram/teacher_heads.py).
    teacher_head: TeacherHeadKind = "probe"


def fit_probe(
    method: Method,
    probe: StandardisedLinear,
    train: FeatureSplit,
    val: Optional[FeatureSplit],
    device: torch.device,
    pooled: Callable[[torch.Tensor], torch.Tensor] = lambda f: f,
) -> torch.Tensor:
    """Solve ``probe`` on the training images' pooled FM features (the labelled ones, and the unlabelled ones as the
    method's ``teacher_head`` option says; its L2 chosen on ``val``); return the training split's teacher features
    (labelled and unlabelled) for further statistics. The heads' validation figures go to ``method.prepare_rows``."""
    fm = method.fm_pass(device)
    feats, labels = split_teacher_features(train, fm)
    held_out = None
    if val is not None:
        vf, vl = split_teacher_features(val, fm)
        held_out = (pooled(vf), vl)
    known = labels != UNLABELLED  # the labels a probe is fitted on; the unlabelled images only through the head
    kind = method.options.teacher_head if isinstance(method.options, TeacherHeadOptions) else "probe"
    head_features = Features(pooled(feats[known]), labels[known], pooled(feats[~known]), held_out)
    fitted, rows = fit_teacher_head(kind, head_features, method.num_classes, method.class_weights)
    probe.load_state_dict(fitted.state_dict())
    method.prepare_rows = rows
    return feats
