"""The grammars task: rules reproduce the study's rows; sizes, labels, determinism, splits."""

from __future__ import annotations

import json
import re

import pytest

from attriblm.data.tasks import PRESETS, TASKS, build_task
from attriblm.data.tasks.grammars import (
    ADJECTIVES,
    ADVERBS,
    NOUNS,
    PREPOSITIONS,
    RULES,
    VERBS,
    VOWELS,
    build_grammars,
)
from attriblm.errors import ConfigError

PROMPT_RE = re.compile(r"Determine the grammar rule: (?P<sentence>.+?\.) -> (?P<rewritten>.+)")

STUDY_RULES = [
    "Reverse Order of Words",
    "Capitalize Every Other Letter",
    "Insert Number 1 Between Every Word",
    "Replace Vowels with *",
    "Double Every Consonant",
    "Capitalize Every Word",
    "Remove All Vowels",
    "Add 'ly' To End of Each Word",
    "Remove All Consonants",
    "Repeat Each Word Twice",
]


@pytest.fixture(scope="module")
def study_rows(study_samples_dir) -> list[dict]:
    """The study's published grammars sample rows (skipped without ../shared/samples)."""
    rows = []
    for split in ("train", "test"):
        text = (study_samples_dir / f"grammars_small_{split}.jsonl").read_text(encoding="utf-8")
        rows += [json.loads(line) for line in text.splitlines()]
    return rows


def parse(prompt: str) -> tuple[str, str]:
    match = PROMPT_RE.fullmatch(prompt)
    assert match, prompt
    return match["sentence"], match["rewritten"]


def test_rule_names_and_order():
    assert list(RULES) == STUDY_RULES


# Every one of the study's sample rows is consistent with a simple rule, so all are checked.
@pytest.mark.parametrize("rule", STUDY_RULES)
def test_rules_reproduce_study_rows(rule, study_rows):
    rows = [r for r in study_rows if r["variation"] == rule]
    assert len(rows) == 10
    for row in rows:
        assert row["response"] == rule
        sentence, rewritten = parse(row["prompts"])
        assert RULES[rule](sentence) == rewritten


def test_word_lists_keep_every_word_nonempty():
    for word in ADJECTIVES + NOUNS + VERBS + ADVERBS + PREPOSITIONS:
        assert word.isalpha() and word.islower(), word
        assert any(c in VOWELS for c in word) and any(c not in VOWELS for c in word), word


def test_paper_sizes_labels_and_prompt_format():
    data = build_grammars()
    assert len(data["train"]) == 900 and len(data["test"]) == 100
    for split, per_class in (("train", 90), ("test", 10)):
        rows = data[split]
        # ordered class by class, in the study's rule order
        assert [rows[i * per_class].label for i in range(10)] == STUDY_RULES
        for i, ex in enumerate(rows):
            assert ex.label == ex.response == STUDY_RULES[i // per_class]
            sentence, rewritten = parse(ex.prompt)
            assert RULES[ex.label](sentence) == rewritten
            assert 3 <= len(sentence.split()) <= 5
            assert sentence[0].isupper() and sentence.endswith(".")


def test_sentences_distinct_and_train_test_disjoint():
    data = build_grammars(20, 5, seed=7)
    for rule in RULES:
        train = [parse(e.prompt)[0] for e in data["train"] if e.label == rule]
        test = [parse(e.prompt)[0] for e in data["test"] if e.label == rule]
        assert len(set(train)) == 20 and len(set(test)) == 5
        assert not set(train) & set(test)


def test_corpus_is_not_the_study_sentences(study_rows):
    ours = {parse(e.prompt)[0] for split in build_grammars().values() for e in split}
    theirs = {parse(r["prompts"])[0] for r in study_rows}
    assert not ours & theirs


def test_deterministic_by_seed():
    assert build_grammars(10, 2, seed=1) == build_grammars(10, 2, seed=1)
    assert build_grammars(10, 2, seed=1) != build_grammars(10, 2, seed=2)


def test_bad_sizes():
    with pytest.raises(ConfigError, match="n_train_per_class"):
        build_grammars(0, 1)


# ------------------------------------------------------------------ the registry


@pytest.mark.parametrize(("preset", "n_train", "n_test"), [("paper", 90, 10), ("quick", 8, 2)])
def test_build_task_presets(preset, n_train, n_test):
    data = build_task("grammars", preset)
    assert len(data["train"]) == 10 * n_train and len(data["test"]) == 10 * n_test
    assert set(PRESETS["grammars"]) == {"paper", "quick", "demo"}
    assert TASKS["grammars"] is build_grammars


def test_build_task_overrides_and_seed():
    data = build_task("grammars", "quick", seed=3, n_test_per_class=1, n_train_per_class=None)
    assert len(data["train"]) == 80 and len(data["test"]) == 10
    assert data == build_grammars(8, 1, seed=3)


@pytest.mark.parametrize(
    ("args", "kwargs", "pattern"),
    [
        (("nope",), {}, r"unknown task 'nope'; valid tasks: grammars"),
        (("grammars", "huge"), {}, r"unknown preset 'huge'.*paper, quick, demo"),
        (("grammars",), {"n_val": 3}, r"no size 'n_val'.*n_train_per_class"),
    ],
)
def test_build_task_errors(args, kwargs, pattern):
    with pytest.raises(ConfigError, match=pattern):
        build_task(*args, **kwargs)
