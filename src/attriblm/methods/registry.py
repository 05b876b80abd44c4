"""Method registry: ``--method`` names → :class:`~attriblm.methods.base.AttributionMethod` classes.

Importing :mod:`attriblm.methods` registers the built-in methods, in the order
``gradsim, gradcos, repsim, datainf, lissa-paper, lissa, exact, tracin, cg, kfac, ekfac,
rept, less``.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import TypeVar

from attriblm.errors import ConfigError
from attriblm.methods.base import FEATURE_KINDS, AttributionMethod, method_needs

_REGISTRY: dict[str, type[AttributionMethod]] = {}

M = TypeVar("M", bound=type[AttributionMethod])


def register(cls: M) -> M:
    """Class decorator: make ``cls`` available under ``cls.name`` (names are unique)."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__name__} needs a non-empty class attribute 'name'")
    if not isinstance(getattr(cls, "summary", None), str):
        raise TypeError(f"{cls.__name__} needs a class attribute 'summary'")
    needs = getattr(cls, "needs", None)
    if not isinstance(needs, (str, tuple)):
        raise TypeError(f"{cls.__name__} needs a class attribute 'needs'")
    if not method_needs(cls) or any(k not in FEATURE_KINDS for k in method_needs(cls)):
        raise TypeError(f"{cls.__name__}.needs must be drawn from {', '.join(FEATURE_KINDS)}")
    existing = _REGISTRY.get(name)
    if existing is not None and existing is not cls:
        raise ValueError(f"method name '{name}' is already registered by {existing.__name__}")
    _REGISTRY[name] = cls
    return cls


def available_methods() -> list[str]:
    """Registered method names, in registration order."""
    return list(_REGISTRY)


def _unknown(name: str) -> ConfigError:
    return ConfigError(
        f"unknown method '{name}' (--method); available: {', '.join(available_methods())}"
    )


def get_method_class(name: str) -> type[AttributionMethod]:
    """The class registered under ``name``; ConfigError if there is none."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise _unknown(name) from None


def create_method(name: str, **options: object) -> AttributionMethod:
    """Instantiate method ``name`` with constructor ``options``.

    ConfigError for an unknown name or an option the method does not take (the message lists
    the accepted ones).
    """
    cls = get_method_class(name)
    signature = inspect.signature(cls)
    try:
        signature.bind(**options)
    except TypeError:
        accepted = [p for p in signature.parameters if p not in ("self", "args", "kwargs")]
        bad = [k for k in options if k not in signature.parameters]
        raise ConfigError(
            f"method '{name}' does not accept option(s) {bad or list(options)}; "
            f"it accepts: {', '.join(accepted) or 'none'}"
        ) from None
    return cls(**options)


def expand_method_names(names: Sequence[str]) -> list[str]:
    """Resolve ``--method`` values: ``"all"`` → every registered method; duplicates dropped.

    Order is kept (first occurrence wins); unknown names raise ConfigError.
    """
    if isinstance(names, str):
        names = [names]
    out: list[str] = []
    for name in names:
        expanded = available_methods() if name == "all" else [name]
        for n in expanded:
            if n not in _REGISTRY:
                raise _unknown(n)
            if n not in out:
                out.append(n)
    return out
