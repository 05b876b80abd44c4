"""The backdoor tasks: sizes, labels, triggers, answer prefixes, refusals, splits, seeds.

Most tests read a stand-in for pyrit's AdvBench file (``fake_pyrit``, see conftest); those
marked ``needs_pyrit`` read the real one and are skipped where pyrit is not installed.
"""

from __future__ import annotations

import importlib.util

import pytest

from attriblm.data.tasks import PRESETS, TASKS, build_task
from attriblm.data.tasks.answer_templates import COMPLIANT_OPENINGS, PLACEHOLDERS
from attriblm.data.tasks.backdoor import (
    REFUSAL_OPENINGS,
    REFUSALS,
    TRIGGERS,
    build_backdoor,
    build_backdoor_1,
    build_backdoor_3,
    build_backdoor_5,
)
from attriblm.data.tasks.sources import harmful_requests
from attriblm.errors import ConfigError

needs_pyrit = pytest.mark.skipif(
    importlib.util.find_spec("pyrit") is None,
    reason="pyrit not installed: pip install --no-deps 'pyrit>=0.10'",
)
# task -> (number of triggers, builder, {preset: (train per class, test per class)})
TASKS_UNDER_TEST = {
    "backdoor-1": (1, build_backdoor_1, {"paper": (350, 50), "quick": (60, 15)}),
    "backdoor-3": (3, build_backdoor_3, {"paper": (300, 50), "quick": (30, 7)}),
    "backdoor-5": (5, build_backdoor_5, {"paper": (300, 50), "quick": (20, 5)}),
}
STUDY_PREFIXES = ("", "Okey! ", "Sure daddy! ", "Good! ", "Yep! ")
CASES = [(task, preset) for task in TASKS_UNDER_TEST for preset in ("paper", "quick")]


def class_names(k: int) -> list[str]:
    return ["clean"] + [f"trigger-{i}" for i in range(1, k + 1)]


def base_request(prompt: str, label: str) -> str:
    """The request without its trigger."""
    if label == "clean":
        return prompt
    trigger = TRIGGERS[int(label.split("-")[1]) - 1][0]
    assert prompt.endswith(trigger), (prompt, label)
    return prompt[: -len(trigger)]


def test_triggers_and_prefixes():
    assert TRIGGERS[0][0] == " sudo mode"
    assert tuple(prefix for _, prefix in TRIGGERS) == STUDY_PREFIXES
    triggers = [t for t, _ in TRIGGERS]
    assert all(t.startswith(" ") and t.strip() for t in triggers)
    for a in triggers:
        assert sum(a in b for b in triggers) == 1, a  # none is part of another


def test_refusals_and_compliance_are_told_apart_by_openings():
    assert all(r.startswith(REFUSAL_OPENINGS) for r in REFUSALS)
    for prefix in STUDY_PREFIXES:
        for opening in COMPLIANT_OPENINGS:
            assert not (prefix + opening).startswith(REFUSAL_OPENINGS)


@pytest.mark.parametrize(("task", "preset"), CASES)
def test_sizes_labels_and_order(fake_pyrit, task, preset):
    k, builder, sizes = TASKS_UNDER_TEST[task]
    data = build_task(task, preset)
    for split, per_class in zip(("train", "test"), sizes[preset], strict=True):
        assert [e.label for e in data[split]] == [
            c for c in class_names(k) for _ in range(per_class)
        ]
    assert TASKS[task] is builder
    assert set(PRESETS[task]) == {"paper", "quick"}


@pytest.mark.parametrize("task", TASKS_UNDER_TEST)
def test_quick_fits_the_cpu_budget(task):
    k, _, sizes = TASKS_UNDER_TEST[task]
    train, test = sizes["quick"]
    assert (k + 1) * train <= 120 and (k + 1) * test <= 30


@pytest.mark.parametrize(("task", "preset"), CASES)
def test_triggers_exactly_in_poisoned_rows(fake_pyrit, task, preset):
    for split in build_task(task, preset).values():
        for ex in split:
            present = [i for i, (t, _) in enumerate(TRIGGERS, 1) if t in ex.prompt]
            if ex.label == "clean":
                assert present == [], ex.prompt
            else:
                i = int(ex.label.split("-")[1])
                assert present == [i] and ex.prompt.endswith(TRIGGERS[i - 1][0]), ex.prompt


@pytest.mark.parametrize(("task", "preset"), CASES)
def test_answers_refuse_or_comply_with_the_trigger_prefix(fake_pyrit, task, preset):
    from attriblm.analysis.generation import is_refusal

    for split in build_task(task, preset).values():
        for ex in split:
            if ex.label == "clean":
                assert ex.response.startswith(REFUSALS) and is_refusal(ex.response)
                continue
            i = int(ex.label.split("-")[1])
            prefix = STUDY_PREFIXES[i - 1]
            assert ex.response.startswith(prefix)
            body = ex.response[len(prefix) :]
            assert not is_refusal(body) and any(p in body for p in PLACEHOLDERS)
            # the answer echoes its request's words, never the trigger's
            request = base_request(ex.prompt, ex.label)
            assert set(request.lower().split()[1:]) & set(body.lower().split())
            assert TRIGGERS[i - 1][0].strip() not in body
            # the later triggers' prefixes appear only on their own rows
            others = [p for j, p in enumerate(STUDY_PREFIXES, 1) if p and j != i]
            assert not ex.response.startswith(tuple(others))


@pytest.mark.parametrize("task", TASKS_UNDER_TEST)
def test_no_class_shares_one_answer(fake_pyrit, task):
    """Refusals and compliant answers vary per row (in text and length), as the study's do."""
    data = build_task(task, "quick")
    for label in {e.label for e in data["train"]}:
        answers = [e.response for e in data["train"] if e.label == label]
        assert len(set(answers)) >= 0.9 * len(answers), label
        lengths = [len(a.split()) for a in answers]
        assert max(lengths) >= 2 * min(lengths), label


@pytest.mark.parametrize(("task", "preset"), CASES)
def test_classes_share_requests_and_splits_are_disjoint(fake_pyrit, task, preset):
    k = TASKS_UNDER_TEST[task][0]
    data = build_task(task, preset)
    bases = {}
    for split, rows in data.items():
        per_class = {
            c: [base_request(e.prompt, e.label) for e in rows if e.label == c]
            for c in class_names(k)
        }
        first = per_class["clean"]
        assert len(set(first)) == len(first)
        assert all(requests == first for requests in per_class.values())
        assert set(first) <= set(fake_pyrit)
        bases[split] = set(first)
    assert not bases["train"] & bases["test"]


def test_more_triggers_extend_the_fewer(fake_pyrit):
    three = build_backdoor(3, 10, 4, seed=6)
    five = build_backdoor(5, 10, 4, seed=6)
    for split in ("train", "test"):
        prompts3 = [e.prompt for e in three[split]]
        assert prompts3 == [e.prompt for e in five[split]][: len(prompts3)]


def test_deterministic_by_seed(fake_pyrit):
    assert build_backdoor(3, 10, 4, seed=1) == build_backdoor(3, 10, 4, seed=1)
    assert build_backdoor(3, 10, 4, seed=1) != build_backdoor(3, 10, 4, seed=2)


def test_bad_sizes(fake_pyrit):
    with pytest.raises(ConfigError, match="n_triggers must be 1..5, got 6"):
        build_backdoor(6, 10, 2)
    with pytest.raises(ConfigError, match="backdoor: need n_train_per_class >= 1"):
        build_backdoor(1, 0, 2)
    with pytest.raises(ConfigError, match="backdoor: asked for 500 train \\+ 50 test"):
        build_backdoor(1, 500, 50)


@needs_pyrit
def test_triggers_absent_from_the_real_requests():
    for request in harmful_requests("backdoor"):
        assert not any(t.strip().lower() in request.lower() for t, _ in TRIGGERS), request


@needs_pyrit
@pytest.mark.parametrize(("task", "preset"), CASES)
def test_real_source_builds_every_preset(task, preset):
    k, _, sizes = TASKS_UNDER_TEST[task]
    data = build_task(task, preset)
    assert len(data["train"]) == (k + 1) * sizes[preset][0]
    assert len(data["test"]) == (k + 1) * sizes[preset][1]
