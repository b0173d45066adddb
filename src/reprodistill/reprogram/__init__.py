"""Reprogramming modules: feature-space (RD's phi); input prompts and label maps come with TDMR."""

from reprodistill.reprogram.feature import FeatureReprogrammer, ResidualMLP

__all__ = ["FeatureReprogrammer", "ResidualMLP"]
