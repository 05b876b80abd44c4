"""The emotion task: classes, prompt format, sizes, word lists, determinism, splits."""

from __future__ import annotations

import string

import pytest

from attriblm.data.tasks import PRESETS, TASKS, build_task
from attriblm.data.tasks.emotion import CLASSES, LEXICONS, TEMPLATES, build_emotion
from attriblm.errors import ConfigError

PREFIX = "Determine the sentiment: "


def test_classes():
    assert CLASSES == ("sad", "joyful", "angry", "fearful", "surprised")


@pytest.mark.parametrize(("preset", "n_train", "n_test"), [("paper", 150, 50), ("quick", 20, 5)])
def test_preset_sizes_labels_and_order(preset, n_train, n_test):
    data = build_task("emotion", preset)
    for split, per_class in (("train", n_train), ("test", n_test)):
        rows = data[split]
        assert [e.label for e in rows] == [c for c in CLASSES for _ in range(per_class)]
        for ex in rows:
            assert ex.response == ex.label
            assert ex.prompt.startswith(PREFIX) and len(ex.prompt) > len(PREFIX) + 10
    assert set(PRESETS["emotion"]) == {"paper", "quick", "demo"}
    assert TASKS["emotion"] is build_emotion


def test_quick_fits_the_cpu_budget():
    data = build_task("emotion", "quick")
    assert len(data["train"]) <= 120 and len(data["test"]) <= 30


def test_text_uses_only_its_own_class_words():
    data = build_emotion(150, 50)
    for split in data.values():
        for ex in split:
            text = ex.prompt[len(PREFIX) :]
            own = LEXICONS[ex.label]
            assert any(
                event in text or event[0].upper() + event[1:] in text for event in own.events
            )
            for other, lexicon in LEXICONS.items():
                if other != ex.label:
                    assert not any(event in text for event in lexicon.events), text


def test_word_lists_do_not_overlap_between_classes():
    for field in ("events", "feelings", "remarks"):
        seen: dict[str, str] = {}
        for emotion, lexicon in LEXICONS.items():
            for word in getattr(lexicon, field):
                assert seen.setdefault(word, emotion) == emotion, word


def test_templates_use_known_slots():
    slots = {"event", "Event", "feeling", "remark"}
    for template in TEMPLATES:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name}
        assert names and names <= slots, template


def test_texts_distinct_and_train_test_disjoint():
    data = build_emotion(150, 50, seed=5)
    train = [e.prompt for e in data["train"]]
    test = [e.prompt for e in data["test"]]
    assert len(set(train)) == len(train) and len(set(test)) == len(test)
    assert not set(train) & set(test)


def test_deterministic_by_seed():
    assert build_emotion(10, 3, seed=1) == build_emotion(10, 3, seed=1)
    assert build_emotion(10, 3, seed=1) != build_emotion(10, 3, seed=2)


def test_bad_sizes():
    with pytest.raises(ConfigError, match="emotion: need n_train_per_class"):
        build_emotion(0, 1)
    with pytest.raises(ConfigError, match="cannot generate"):
        build_emotion(3000, 0)
