"""Solving a method's linear probe on the frozen FM's features: the `linear_probe` baseline, the KD baselines' teacher
and RD's probe target all use it."""

from __future__ import annotations

from typing import Callable, Optional

import torch

from reprodistill.data.sources import UNLABELLED
from reprodistill.features.split import FeatureSplit, split_teacher_features
from reprodistill.methods.base import Method
from reprodistill.reprogram.probe import StandardisedLinear, fit_linear_probe


def fit_probe(
    method: Method,
    probe: StandardisedLinear,
    train: FeatureSplit,
    val: Optional[FeatureSplit],
    device: torch.device,
    pooled: Callable[[torch.Tensor], torch.Tensor] = lambda f: f,
) -> torch.Tensor:
    """Solve ``probe`` on the labelled training images' pooled FM features (its L2 chosen on ``val``); return the
    training split's teacher features (labelled and unlabelled) for further statistics."""
    fm = method.fm_pass(device)
    feats, labels = split_teacher_features(train, fm)
    held_out = None
    if val is not None:
        vf, vl = split_teacher_features(val, fm)
        held_out = (pooled(vf), vl)
    known = labels != UNLABELLED  # the probe (a KD teacher) is fitted on the labelled images only
    fitted = fit_linear_probe(
        pooled(feats[known]), labels[known], method.num_classes, method.class_weights, val=held_out
    )
    probe.load_state_dict(fitted.state_dict())
    return feats
