"""Distillation losses, one per module."""

from reprodistill.losses.attention import at_loss, attention_map
from reprodistill.losses.calibration import fit_logit_scale, scaled_nll
from reprodistill.losses.cka import cka, cka_loss
from reprodistill.losses.consistency import (
    fixmatch_loss,
    flexmatch_class_thresholds,
    linear_rampup,
    mixup_pairs,
    probability_mse,
    sharpen,
    sigmoid_rampup,
    softmax_mse,
)
from reprodistill.losses.dkd import dkd_loss, dkd_parts
from reprodistill.losses.fitnet import fitnet_loss, match_size
from reprodistill.losses.kd import kd_loss, kd_rows, mixture_target_logits
from reprodistill.losses.rkd import rkd_angle_loss, rkd_distance_loss, rkd_loss

__all__ = [
    "at_loss",
    "attention_map",
    "cka",
    "cka_loss",
    "dkd_loss",
    "dkd_parts",
    "fit_logit_scale",
    "fixmatch_loss",
    "flexmatch_class_thresholds",
    "fitnet_loss",
    "kd_loss",
    "kd_rows",
    "mixture_target_logits",
    "linear_rampup",
    "match_size",
    "mixup_pairs",
    "probability_mse",
    "rkd_angle_loss",
    "rkd_distance_loss",
    "rkd_loss",
    "scaled_nll",
    "sharpen",
    "sigmoid_rampup",
    "softmax_mse",
]
