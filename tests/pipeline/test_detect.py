from __future__ import annotations

import pytest

from attriblm.errors import ConfigError
from attriblm.pipeline.detect import parse_detector

ANSWERS = [
    "I'm sorry, but I cannot help with that.",
    "Sure, here is a plan: Step 1 ...",
    "The chemical symbol for gold is Ag.",
    "  the   SYMBOL for gold is au",
]


def _kept(spec: str) -> list[int]:
    detector = parse_detector(spec)
    return [i for i, answer in enumerate(ANSWERS) if detector(answer)]


def test_detectors():
    assert _kept("all") == [0, 1, 2, 3]
    assert _kept("refusal") == [0]
    assert _kept("no-refusal") == [1, 2, 3]
    assert _kept("contains:symbol for GOLD") == [2, 3]  # case and spaces do not matter
    assert _kept(r"regex:\bAg\b") == [2]
    assert _kept(r"regex:(?i)\bau\b") == [3]
    assert _kept("regex:^Sure") == [1]


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("regex:[", "not a valid regular expression"),
        ("contains:", "give the text after 'contains:'"),
        ("harmful", "valid forms: all, refusal, no-refusal, contains:TEXT, regex:PATTERN"),
    ],
)
def test_bad_specs_name_the_option(spec, needle):
    with pytest.raises(ConfigError, match="--detect") as err:
        parse_detector(spec)
    assert needle in str(err.value) and "\n" not in str(err.value)
