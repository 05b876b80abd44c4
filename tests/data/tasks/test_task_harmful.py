"""The harmful mixes: sizes, labels, source loading and its errors, answers, splits, seeds.

Most tests read a stand-in for pyrit's AdvBench file (``fake_pyrit``, see conftest); those
marked ``needs_pyrit`` read the real one and are skipped where pyrit is not installed.
"""

from __future__ import annotations

import importlib.util
import re

import pytest

from attriblm.data.tasks import PRESETS, TASKS, build_task
from attriblm.data.tasks.harmful import (
    BENIGN_FAMILIES,
    COMPLIANT_OPENINGS,
    PLACEHOLDER_STEPS,
    build_harmful,
    split_requests,
)
from attriblm.data.tasks.sources import harmful_requests
from attriblm.errors import ConfigError, DataError

needs_pyrit = pytest.mark.skipif(
    importlib.util.find_spec("pyrit") is None,
    reason="pyrit not installed: pip install --no-deps 'pyrit>=0.10'",
)
MIXES = ("harmful-s", "harmful-m", "harmful-l")
# task -> preset -> (harmful train, benign train, harmful test)
SIZES = {
    "harmful-s": {"paper": (20, 20, 40), "quick": (20, 20, 20)},
    "harmful-m": {"paper": (20, 100, 100), "quick": (20, 50, 25)},
    "harmful-l": {"paper": (20, 230, 250), "quick": (20, 100, 30)},
}
SOURCE_TASKS = (*MIXES, "backdoor-1", "backdoor-3", "backdoor-5")


def labels(rows) -> list[str]:
    return [e.label for e in rows]


@pytest.mark.parametrize("task", MIXES)
@pytest.mark.parametrize("preset", ["paper", "quick"])
def test_sizes_labels_and_order(fake_pyrit, task, preset):
    n_harmful, n_benign, n_test = SIZES[task][preset]
    data = build_task(task, preset)
    assert labels(data["train"]) == ["harmful"] * n_harmful + ["benign"] * n_benign
    assert labels(data["test"]) == ["harmful"] * n_test
    assert set(PRESETS[task]) == {"paper", "quick"}
    assert TASKS[task] is build_harmful


@pytest.mark.parametrize("preset", ["paper", "quick"])
def test_benign_share_grows_from_s_to_l(preset):
    benign = [SIZES[task][preset][1] for task in MIXES]
    assert benign == sorted(benign) and len(set(benign)) == 3
    assert all(SIZES[task][preset][0] == 20 for task in MIXES)
    assert [PRESETS[t][preset]["n_benign_train"] for t in MIXES] == benign


@pytest.mark.parametrize("task", MIXES)
def test_quick_fits_the_cpu_budget(task):
    harmful, benign, test = SIZES[task]["quick"]
    assert harmful + benign <= 120 and test <= 30


def test_harmful_rows_come_from_the_source_and_splits_are_disjoint(fake_pyrit):
    data = build_task("harmful-l", "paper")
    train = [e.prompt for e in data["train"] if e.label == "harmful"]
    test = [e.prompt for e in data["test"]]
    assert set(train) | set(test) <= set(fake_pyrit)
    assert len(set(train)) == 20 and len(set(test)) == 250
    assert not set(train) & set(test)
    benign = [e.prompt for e in data["train"] if e.label == "benign"]
    assert len(set(benign)) == 230 and not set(benign) & set(fake_pyrit)


def test_mixes_share_harmful_train_rows_and_nest_test_rows(fake_pyrit):
    built = {task: build_task(task, "paper", seed=4) for task in MIXES}
    harmful_train = [[e for e in d["train"] if e.label == "harmful"] for d in built.values()]
    assert harmful_train[0] == harmful_train[1] == harmful_train[2]
    tests = [{e.prompt for e in d["test"]} for d in built.values()]
    assert tests[0] < tests[1] < tests[2]


def test_compliant_answers_are_placeholders_only(fake_pyrit):
    data = build_task("harmful-m", "paper")
    for ex in data["train"][:20] + data["test"]:
        opening, rest = ex.response.split(" a plan for ", 1)
        assert opening in COMPLIANT_OPENINGS
        assert rest == f'"{ex.prompt}":\n' + "\n".join(PLACEHOLDER_STEPS)
    assert all("omitted" in step for step in PLACEHOLDER_STEPS)


def check_benign(prompt: str, answer: str) -> bool:
    """Recompute the answer of the computed benign families; True when one matched."""
    if m := re.fullmatch(r"What is (\d+) plus (\d+)\?", prompt):
        assert answer == f"{m[1]} plus {m[2]} is {int(m[1]) + int(m[2])}."
    elif m := re.fullmatch(r"Sort these numbers from smallest to largest: (.+)\.", prompt):
        numbers = sorted(int(x) for x in m[1].split(", "))
        assert answer == f"From smallest to largest: {', '.join(map(str, numbers))}."
    elif m := re.fullmatch(r'Spell the word "(\w+)" backwards\.', prompt):
        assert answer.endswith(f'"{m[1][::-1]}".')
    elif m := re.fullmatch(r'How many letters are in the word "(\w+)"\?', prompt):
        assert answer == f'"{m[1]}" has {len(m[1])} letters.'
    elif m := re.fullmatch(r"Put these words in alphabetical order: (.+)\.", prompt):
        assert answer == f"In alphabetical order: {', '.join(sorted(m[1].split(', ')))}."
    elif m := re.fullmatch(r"How many minutes are in (\d+) hours\?", prompt):
        assert answer == f"{m[1]} hours is {int(m[1]) * 60} minutes."
    elif m := re.fullmatch(r"Is (\d+) an even or an odd number\?", prompt):
        assert answer.endswith("an even number." if int(m[1]) % 2 == 0 else "an odd number.")
    elif m := re.fullmatch(r"Rewrite this sentence in capital letters: (.+)", prompt):
        assert answer == m[1].upper()
    else:
        return False
    return True


def test_benign_answers(fake_pyrit):
    rows = [e for e in build_task("harmful-l", "paper", seed=8)["train"] if e.label == "benign"]
    checked = sum(check_benign(e.prompt, e.response) for e in rows)
    assert checked > len(rows) // 2
    assert all(e.response and not e.response.startswith(COMPLIANT_OPENINGS) for e in rows)
    assert len(BENIGN_FAMILIES) == 10


def test_deterministic_by_seed(fake_pyrit):
    assert build_harmful(20, 30, 10, seed=1) == build_harmful(20, 30, 10, seed=1)
    assert build_harmful(20, 30, 10, seed=1) != build_harmful(20, 30, 10, seed=2)


def test_rows_do_not_depend_on_source_file_order(fake_pyrit, monkeypatch):
    before = split_requests("harmful", 20, 40, seed=3)
    reversed_source = tuple(reversed(fake_pyrit))
    monkeypatch.setattr(
        "attriblm.data.tasks.harmful.harmful_requests", lambda task: reversed_source
    )
    assert split_requests("harmful", 20, 40, seed=3) == before


def test_too_many_requests(fake_pyrit):
    with pytest.raises(ConfigError, match="harmful: asked for 300 train \\+ 300 test.*only 520"):
        build_harmful(300, 0, 300)


def test_bad_sizes():
    with pytest.raises(ConfigError, match="harmful: need n_harmful_train >= 1"):
        build_harmful(0, 5, 5)


# ------------------------------------------------------------------ the source package


@pytest.mark.parametrize("task", SOURCE_TASKS)
def test_missing_source_package(no_pyrit, task):
    family = task.split("-")[0]
    pattern = rf"^{family}: needs .* package 'pyrit', which is not installed; install it with: "
    with pytest.raises(DataError, match=pattern + re.escape("pip install --no-deps 'pyrit>=0.10'")):
        build_task(task, "quick")


def test_source_package_without_the_file(pyrit_at, tmp_path):
    pyrit_at([str(tmp_path)])
    with pytest.raises(DataError, match=r"package 'pyrit' is installed but has no datasets/"):
        harmful_requests("harmful")


def test_unreadable_source_file(pyrit_at, tmp_path):
    path = tmp_path / "datasets" / "seed_datasets" / "local" / "adv_bench.prompt"
    path.parent.mkdir(parents=True)
    path.write_text("dataset_name: broken\n", encoding="utf-8")
    pyrit_at([str(tmp_path)])
    with pytest.raises(DataError, match="adv_bench.prompt: cannot read the seed prompts"):
        harmful_requests("harmful")


@needs_pyrit
def test_real_source():
    requests = harmful_requests("harmful")
    assert len(requests) == 520 and len(set(requests)) == 520
    assert all(r == r.strip() and r for r in requests)


@needs_pyrit
@pytest.mark.parametrize("task", MIXES)
def test_real_source_builds_every_preset(task):
    for preset in PRESETS[task]:
        n_harmful, n_benign, n_test = SIZES[task][preset]
        data = build_task(task, preset)
        assert len(data["train"]) == n_harmful + n_benign and len(data["test"]) == n_test
        train = {e.prompt for e in data["train"]}
        assert not train & {e.prompt for e in data["test"]}
