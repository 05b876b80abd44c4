"""attriblm: which training examples made my fine-tuned language model do this?

The public API (imported lazily, so ``import attriblm`` stays fast):

- :func:`load_model`, :func:`load_examples`, :func:`build_task` — model and data;
- :func:`finetune`, :func:`attribute`, :func:`trace`, :func:`evaluate` — the pipeline
  (:mod:`attriblm.api`);
- :func:`available_methods`; :class:`TrainSettings`, :class:`AttributeSettings`, :class:`Example`.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_model": "attriblm.models.loading",
    "load_examples": "attriblm.data.loaders",
    "build_task": "attriblm.data.tasks",
    "finetune": "attriblm.api",
    "attribute": "attriblm.api",
    "trace": "attriblm.api",
    "evaluate": "attriblm.api",
    "available_methods": "attriblm.methods.registry",
    "TrainSettings": "attriblm.train.finetune",
    "AttributeSettings": "attriblm.pipeline.settings",
    "Example": "attriblm.data.schema",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'attriblm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
