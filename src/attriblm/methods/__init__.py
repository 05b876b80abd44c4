"""Attribution methods: one file per method against one interface, plus a registry.

Importing this package registers the built-in methods; registration order (also the order of
``--method all``) is gradsim, gradcos, repsim, datainf, lissa-paper, lissa, exact, tracin, cg,
kfac, ekfac, rept, less.
"""

from __future__ import annotations

import importlib

from attriblm.methods.base import (
    AttributionMethod,
    FeatureSet,
    MethodOutput,
    PreconditionedGradientMethod,
)
from attriblm.methods.damping import Damping
from attriblm.methods.registry import (
    available_methods,
    create_method,
    expand_method_names,
    register,
)

# Imported one by one (not in an import statement a formatter may sort) to fix the order.
_BUILTIN_MODULES = (
    "gradsim",
    "gradcos",
    "repsim",
    "datainf",
    "lissa_paper",
    "lissa",
    "exact",
    "tracin",
    "cg",
    "kfac",
    "rept",
    "less",
)
for _module in _BUILTIN_MODULES:
    importlib.import_module(f"attriblm.methods.{_module}")

__all__ = [
    "AttributionMethod",
    "Damping",
    "FeatureSet",
    "MethodOutput",
    "PreconditionedGradientMethod",
    "available_methods",
    "create_method",
    "expand_method_names",
    "register",
]
