"""Training methods, one file each, registered by name in :data:`METHODS`.

Every module of this package is imported here, so a new method is one new file with ``@register_method(name)``.
"""

import importlib
import pkgutil

from reprodistill.methods.base import METHODS, Batch, Method, MethodContext, StepOutput, register_method
from reprodistill.methods.checks import check_config

for _module in pkgutil.iter_modules(__path__):  # registration side effects: importing a method file registers it
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["METHODS", "Batch", "Method", "MethodContext", "StepOutput", "check_config", "register_method"]
