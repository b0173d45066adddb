"""Training methods, one file each, registered by name in :data:`METHODS`."""

# registration side effects: importing a method file registers it
from reprodistill.methods import (  # noqa: F401
    at,
    cka_kd,
    dkd,
    drd,
    fitnet,
    kd,
    linear_probe,
    lora,
    rd,
    rkd,
    student,
    tdmr,
    visual_prompt,
    vpt,
)
from reprodistill.methods.base import METHODS, Batch, Method, MethodContext, register_method

__all__ = ["METHODS", "Batch", "Method", "MethodContext", "register_method"]
