"""Training methods, one file each, registered by name in :data:`METHODS`."""

from reprodistill.methods import drd, linear_probe, rd, student  # noqa: F401 - registration side effects
from reprodistill.methods.base import METHODS, Batch, Method, MethodContext, register_method

__all__ = ["METHODS", "Batch", "Method", "MethodContext", "register_method"]
