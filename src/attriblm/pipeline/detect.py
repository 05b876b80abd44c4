"""Behaviour detectors for ``trace``: which generations show the behaviour to be traced.

Specs (``--detect``):

* ``all``: every generation;
* ``refusal`` / ``no-refusal``: the generation opens (or does not open) with a refusal, by the
  rule the Δθ diagnosis uses (:func:`attriblm.analysis.generation.is_refusal`);
* ``contains:TEXT``: the generation contains ``TEXT`` (whitespace collapsed, case-insensitive;
  :func:`attriblm.analysis.generation.answer_matches`);
* ``regex:PATTERN``: :func:`re.search` of the Python regular expression ``PATTERN`` finds a
  match (case-sensitive unless the pattern says ``(?i)``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from attriblm.analysis.generation import REFUSAL_RULE, answer_matches, is_refusal
from attriblm.errors import ConfigError

DETECT_FORMS = ("all", "refusal", "no-refusal", "contains:TEXT", "regex:PATTERN")


@dataclass(frozen=True)
class Detector:
    """A parsed ``--detect`` spec: ``keep(generation)`` says whether the behaviour shows."""

    spec: str
    rule: str
    keep: Callable[[str], bool]

    def __call__(self, generation: str) -> bool:
        return bool(self.keep(generation))


def parse_detector(spec: str) -> Detector:
    """The detector for ``spec`` (module docstring); ConfigError naming ``--detect`` otherwise."""
    kind, sep, arg = spec.partition(":")
    if spec == "all":
        return Detector(spec, "every generation", lambda _text: True)
    if spec == "refusal":
        return Detector(spec, REFUSAL_RULE, is_refusal)
    if spec == "no-refusal":
        return Detector(spec, f"not a refusal; {REFUSAL_RULE}", lambda t: not is_refusal(t))
    if sep and kind in ("contains", "regex") and not arg:
        raise ConfigError(f"--detect {spec}: give the text after '{kind}:'")
    if kind == "contains" and sep:
        return Detector(
            spec,
            f"contains {arg!r} (whitespace collapsed, case-insensitive)",
            lambda t: answer_matches(t, arg),
        )
    if kind == "regex" and sep:
        try:
            pattern = re.compile(arg)
        except re.error as error:
            raise ConfigError(
                f"--detect {spec}: not a valid regular expression ({error})"
            ) from None
        return Detector(spec, f"re.search({arg!r}) matches", lambda t: bool(pattern.search(t)))
    raise ConfigError(
        f"--detect: unknown detector {spec!r}; valid forms: {', '.join(DETECT_FORMS)}"
    )
