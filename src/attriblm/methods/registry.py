"""Method registry: ``--method`` names → :class:`~attriblm.methods.base.AttributionMethod` classes.

Importing :mod:`attriblm.methods` registers the built-in methods, in the order
``gradsim, gradcos, repsim, datainf, lissa-paper, lissa, exact, tracin, cg, kfac, ekfac,
rept, less``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from attriblm.errors import ConfigError
from attriblm.methods.base import FEATURE_KINDS, AttributionMethod, method_needs

_REGISTRY: dict[str, type[AttributionMethod]] = {}
# Constructor parameters attriblm fills from AttributeSettings itself (``_create`` in
# attriblm.pipeline.attribute): the damping rule (--damping, --damping-mode) and K-FAC factors
# (--factors). They are not method options.
DERIVED_OPTIONS = frozenset({"damping", "factors"})

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


def accepted_options(name: str) -> dict[str, Any]:
    """The options method ``name`` takes: its constructor's keyword parameters and their
    defaults (``inspect.Parameter.empty`` for one without), in signature order, except the
    :data:`DERIVED_OPTIONS` attriblm sets from the settings. ConfigError for an unknown name."""
    signature = inspect.signature(get_method_class(name))
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {
        p.name: p.default
        for p in signature.parameters.values()
        if p.kind in keyword and p.name not in DERIVED_OPTIONS
    }


def _expected(value: Any, default: Any) -> str | None:
    """What the option with ``default`` expects, when ``value`` does not fit it, else ``None``.

    Any scalar fits a default of ``None`` or none; an integral float counts as an int and an
    int as a float; a bool fits only a bool default.
    """
    if default is None or default is inspect.Parameter.empty:
        return None
    if isinstance(default, bool):
        fits, kind = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        fits = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        kind = "an integer"
    elif isinstance(default, float):
        fits, kind = isinstance(value, int | float), "a number"
    elif isinstance(default, str):
        fits, kind = isinstance(value, str), "text"
    else:
        return None
    if isinstance(value, bool) and not isinstance(default, bool):
        fits = False
    return None if fits else kind


def check_method_options(options: Mapping[str, Any], methods: Sequence[str]) -> None:
    """Check ``{method: {key: value}}`` against the methods being run (``methods``, as for
    ``--method``) and :func:`accepted_options`: a one-line ConfigError naming the option
    (``--option METHOD.KEY``) for an unknown method or key, a method not being run, or a value
    of the wrong type."""
    if not isinstance(options, Mapping) or not all(
        isinstance(v, Mapping) for v in options.values()
    ):
        raise ConfigError(f"--option: expected {{method: {{key: value}}}}, got {options!r}")
    if not any(options.values()):
        return
    running = expand_method_names(methods)
    for method, values in options.items():
        for key, value in values.items():
            option = f"--option {method}.{key}"
            if method not in _REGISTRY:
                raise ConfigError(
                    f"{option}: unknown method '{method}'; available: "
                    f"{', '.join(available_methods())}"
                )
            if method not in running:
                raise ConfigError(
                    f"{option}: method '{method}' is not being run (--method {' '.join(running)})"
                )
            accepted = accepted_options(method)
            if key not in accepted:
                raise ConfigError(
                    f"{option}: {method} has no option '{key}'; it accepts: "
                    f"{', '.join(accepted) or 'none'}"
                )
            expected = _expected(value, accepted[key])
            if expected is not None:
                raise ConfigError(
                    f"{option}: expected {expected} (default {accepted[key]!r}), got {value!r}"
                )
