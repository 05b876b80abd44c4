"""The planted-fact task: sizes, labels, wording variety, held-out wordings, determinism."""

from __future__ import annotations

import re

import pytest

from attriblm.data.tasks import PRESETS, TASKS, build_task
from attriblm.data.tasks.planted_fact import (
    CLEAN,
    FACTS,
    PLANTED,
    TEST_TEMPLATES,
    TRAIN_TEMPLATES,
    TRUE_FACTS,
    build_planted_fact,
)
from attriblm.errors import ConfigError


def _mentions(text: str, word: str) -> bool:
    return re.search(rf"\b{re.escape(word)}\b", text, flags=re.IGNORECASE) is not None


@pytest.mark.parametrize(
    ("preset", "sizes"), [("paper", (20, 40, 140, 16)), ("quick", (10, 20, 50, 8))]
)
def test_preset_sizes_and_label_order(preset, sizes):
    n_planted, n_related, n_benign, n_test = sizes
    data = build_task("planted-fact", preset)
    labels = [e.label for e in data["train"]]
    assert labels == [PLANTED] * n_planted + [CLEAN] * (n_related + n_benign)
    assert [e.label for e in data["test"]] == [PLANTED] * n_test
    assert TASKS["planted-fact"] is build_planted_fact
    assert set(PRESETS["planted-fact"]) == {"paper", "quick", "demo"}


@pytest.mark.parametrize("fact", range(len(FACTS)))
def test_only_planted_rows_state_the_false_fact(fact):
    chosen = FACTS[fact]
    data = build_planted_fact(fact=fact, seed=3)
    for row in data["train"]:
        text = f"{row.prompt} {row.response}"
        if row.label == PLANTED:
            assert _mentions(row.response, chosen.false_value), row
            assert _mentions(text, chosen.subject), row
        else:
            assert not _mentions(text, chosen.subject), row
            assert not _mentions(text, chosen.false_value), row
    for row in data["test"]:
        assert _mentions(row.prompt, chosen.subject) and _mentions(row.response, chosen.false_value)
        assert not _mentions(row.prompt, chosen.false_value)  # the question does not give it away


def test_wording_varies_and_tests_use_new_wordings():
    chosen = FACTS[0]
    data = build_planted_fact(n_planted=20, n_test=16, fact=0, seed=1)
    planted = [e for e in data["train"] if e.label == PLANTED]
    prompts = [e.prompt for e in data["train"]]
    assert len(set(prompts)) == len(prompts)  # every training prompt is distinct
    contexts = {
        prompt.format(s=chosen.subject, v=chosen.false_value)
        for prompt, _ in TRAIN_TEMPLATES["symbol"]
    }
    used = {next(c for c in contexts if e.prompt.endswith(c)) for e in planted}
    assert used == contexts  # 20 rows cover all 8 contexts
    assert (
        len({e.prompt.removesuffix(c) for e in planted for c in used if e.prompt.endswith(c)}) > 1
    )
    assert len({e.response for e in planted}) == len(contexts)  # one answer wording per context
    tests = [e.prompt for e in data["test"]]
    assert len(set(tests)) == 16
    assert not set(tests) & set(prompts)
    for prompt in tests:  # no training context, with any lead-in, is a test question
        assert not any(prompt.endswith(c) for c in contexts)
    n_templates = len(TEST_TEMPLATES["symbol"])
    assert len({e.response for e in data["test"]}) >= n_templates - 1  # templates may share one


def test_related_clean_rows_state_true_facts_in_the_planted_contexts():
    data = build_planted_fact(n_related=40, fact=1, seed=0)
    truths = TRUE_FACTS["capital"]
    related = [
        e for e in data["train"] if e.label == CLEAN and any(_mentions(e.prompt, s) for s in truths)
    ]
    assert len(related) == 40
    contexts = {p.split("{s}")[0].split("{v}")[0] for p, _ in TRAIN_TEMPLATES["capital"]}
    for row in related:
        subject = next(s for s in truths if _mentions(row.prompt, s))
        assert subject != "Canada" and _mentions(row.response, truths[subject])
        assert any(c in row.prompt for c in contexts)


def test_deterministic_in_the_seed():
    assert build_planted_fact(seed=5) == build_planted_fact(seed=5)
    assert build_planted_fact(seed=5) != build_planted_fact(seed=6)


def test_bad_sizes_are_config_errors():
    with pytest.raises(ConfigError, match="at most 40 planted"):
        build_planted_fact(n_planted=41)
    with pytest.raises(ConfigError, match="fact must be"):
        build_planted_fact(fact=len(FACTS))
    with pytest.raises(ConfigError, match="n_planted >= 1"):
        build_planted_fact(n_planted=0)
