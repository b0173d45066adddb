"""Distillation losses, one per module."""

from reprodistill.distill.cka import cka, cka_loss
from reprodistill.distill.kd import kd_loss

__all__ = ["cka", "cka_loss", "kd_loss"]
