"""Reprogramming modules: feature-space (RD's phi) and map-space (DRD's stage projectors)."""

from reprodistill.reprogram.feature import FeatureReprogrammer, ResidualMLP
from reprodistill.reprogram.maps import MapProjector

__all__ = ["FeatureReprogrammer", "MapProjector", "ResidualMLP"]
