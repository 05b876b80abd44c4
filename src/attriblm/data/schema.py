"""The one example type every loader returns and every stage consumes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    """One (prompt, response, label) row.

    ``label`` is the behaviour class (the study's ``variation`` field); it may be ``None`` for
    data that is only attributed, not evaluated.
    """

    prompt: str
    response: str
    label: str | None = None


@dataclass(frozen=True)
class FieldMap:
    """Names of the prompt / response / label fields in a data file (the study's by default)."""

    prompt: str = "prompts"
    response: str = "response"
    label: str = "variation"
