"""Checks of settings values, shared by every settings dataclass (CLI, API and config files).

Each check raises a one-line :class:`~attriblm.errors.ConfigError` naming the command-line
option of the field (``batch_size`` → ``--batch-size``) and the value it got.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

from attriblm.errors import ConfigError


def option(field: str) -> str:
    """The command-line flag of a settings field: ``batch_size`` → ``--batch-size``."""
    return "--" + field.replace("_", "-")


def integer(field: str, value: Any, minimum: int | None = None) -> None:
    """``value`` is an int (not a bool) and, when given, at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{option(field)} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{option(field)} must be at least {minimum}, got {value}")


def number(field: str, value: Any, *, positive: bool = False, non_negative: bool = False) -> None:
    """``value`` is a finite real number (> 0 with ``positive``, >= 0 with ``non_negative``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{option(field)} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{option(field)} must be a finite number, got {value}")
    if positive and value <= 0:
        raise ConfigError(f"{option(field)} must be positive, got {value!r}")
    if non_negative and value < 0:
        raise ConfigError(f"{option(field)} must be non-negative, got {value!r}")


def one_of(field: str, value: Any, choices: Collection[str]) -> None:
    """``value`` is one of ``choices``."""
    if value not in choices:
        raise ConfigError(
            f"{option(field)}: unknown value {value!r}; valid values: {', '.join(choices)}"
        )
