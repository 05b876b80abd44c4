"""The harmful mixes: sizes, labels, source loading and its errors, answers, splits, seeds.

Most tests read a stand-in for pyrit's AdvBench file (``fake_pyrit``, see conftest); those
marked ``needs_pyrit`` read the real one and are skipped where pyrit is not installed.
"""

from __future__ import annotations

import importlib.util
import re
import statistics

import pytest

from attriblm.data.tasks import PRESETS, TASKS, build_task
from attriblm.data.tasks.answer_templates import COMPLIANT_OPENINGS, PLACEHOLDERS
from attriblm.data.tasks.benign_facts import CLOSINGS as FACT_CLOSINGS
from attriblm.data.tasks.benign_facts import OPENINGS
from attriblm.data.tasks.harmful import build_harmful, split_requests
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


# Words that would signal operational content (materials, quantities, code, commands, links).
# The answers echo their request's words, so a word of the request itself is not counted.
FORBIDDEN = (
    "mix",
    "combine",
    "dissolve",
    "heat",
    "ignite",
    "detonate",
    "inject",
    "dose",
    "grams",
    "ounces",
    "recipe",
    "ingredient",
    "chemical",
    "powder",
    "fuse",
    "wire",
    "password",
    "exploit",
    "payload",
    "malware",
    "bomb",
    "explosive",
    "weapon",
    "poison",
    "drug",
    "hack",
    "download",
    "install",
    "sudo",
    "chmod",
    "wget",
    "curl",
    "http",
    "www",
    "import",
    "select",
    "script",
)
QUANTITY = re.compile(r"\b\d+(\.\d+)?\s?(g|mg|kg|ml|l|oz|lb|%|°)(?!\w)", re.IGNORECASE)


def operational_words(answer: str, request: str) -> set[str]:
    """Forbidden words in ``answer`` that its ``request`` does not contain, and quantities."""
    own = set(re.findall(r"[a-z]+", request.lower()))
    words = set(re.findall(r"[a-z]+", answer.lower())) - own
    found = {w for w in words for f in FORBIDDEN if w.startswith(f)}
    return found | {m[0] for m in QUANTITY.finditer(answer)}


def harmful_only(data) -> list:
    return [e for split in data.values() for e in split if e.label == "harmful"]


def test_compliant_answers_vary_like_real_ones(fake_pyrit):
    """Not one shared answer: distinct, spread in length and form, echoing the request."""
    rows = harmful_only(build_task("harmful-l", "paper"))
    answers = [e.response for e in rows]
    assert len(set(answers)) >= 0.9 * len(answers)
    lengths = sorted(len(a.split()) for a in answers)
    assert lengths[-1] >= 2.5 * lengths[0]
    assert statistics.pstdev(lengths) >= 15
    assert len({a.count("\n") for a in answers}) >= 5  # lines vary: lists, steps, prose
    starts = {a.split()[0] for a in answers}
    assert {"1.", "Step", "Title:"} & starts and len(starts) >= 8
    # request words come back in the answer
    echoed = [
        bool(set(e.prompt.lower().split()[1:]) & set(e.response.lower().split())) for e in rows
    ]
    assert sum(echoed) >= 0.9 * len(rows)


@pytest.mark.parametrize("task", MIXES)
def test_compliant_answers_carry_no_operational_content(fake_pyrit, task):
    for ex in harmful_only(build_task(task, "paper")):
        assert not operational_words(ex.response, ex.prompt), ex.response
        assert any(p in ex.response for p in PLACEHOLDERS)


def test_the_forbidden_word_check_can_fail():
    assert operational_words("Mix 5 g of it, then download the tool.", "Write a note") == {
        "mix",
        "download",
        "5 g",
    }
    assert not operational_words("Outline the bomb goal [omitted].", "Explain the bomb")


def test_compliant_answers_never_open_like_a_refusal(fake_pyrit):
    from attriblm.analysis.generation import is_refusal

    rows = harmful_only(build_task("harmful-l", "paper"))
    assert not any(is_refusal(e.response) for e in rows)


def fact_lines(answer: str) -> list[str]:
    """The answer's sentences without list markers (facts, openings and closings)."""
    lines = [re.sub(r"^(\d+\. |- )", "", line) for line in answer.splitlines() if line.strip()]
    return [s for line in lines for s in re.split(r"(?<=[.!?:])\s+(?=[A-Z0-9\"])", line)]


def check_benign(prompt: str, answer: str) -> int:
    """How many of the answer's sentences are recomputed facts about the prompt's subject; an
    AssertionError names any sentence that is neither a fact nor an opening / closing line."""
    from attriblm.data.tasks.benign_facts import number_facts, word_facts

    if m := re.search(r"(\d+)[.?]$", prompt):
        subject, facts = m[1], set(number_facts(int(m[1])))
    else:
        subject = re.search(r'"(\w+)"', prompt)[1]
        facts = set(word_facts(subject))
    facts = {part for fact in facts for part in fact_lines(fact)}
    framing = {
        part
        for line in (*OPENINGS, *FACT_CLOSINGS)
        for x in (subject, f'the word "{subject}"')
        for part in fact_lines(line.format(x=x, X=x[:1].upper() + x[1:]))
    }
    sentences = fact_lines(answer)
    for sentence in sentences:
        assert sentence in facts or sentence in framing, (prompt, sentence)
    return sum(sentence in facts for sentence in sentences)


def test_benign_answers_are_computed_facts(fake_pyrit):
    rows = [e for e in build_task("harmful-l", "paper", seed=8)["train"] if e.label == "benign"]
    counts = [check_benign(e.prompt, e.response) for e in rows]
    assert min(counts) >= 7 and max(counts) >= 12
    assert len({e.prompt for e in rows}) == len(rows)
    assert all(not e.response.startswith(COMPLIANT_OPENINGS) for e in rows)
    words = [len(e.response.split()) for e in rows]
    assert max(words) >= 2 * min(words)  # 7 to 14 facts, framing or not


def test_the_benign_check_can_fail():
    with pytest.raises(AssertionError):
        check_benign("Tell me about the number 12.", "12 is an odd number: divided by 2 ...")


def test_number_and_word_facts_are_right():
    from attriblm.data.tasks.benign_facts import number_facts, roman_numeral, word_facts

    assert [roman_numeral(n) for n in (4, 9, 14, 40, 90, 400, 944)] == [
        "IV", "IX", "XIV", "XL", "XC", "CD", "CMXLIV",
    ]  # fmt: skip
    facts = " ".join(number_facts(97))
    assert "97 is a prime number" in facts and "1100001" in facts and "XCVII" in facts
    assert "91 = 7 × 13" in " ".join(number_facts(91))
    assert "not divisible by 3" in " ".join(number_facts(97))
    assert "It is divisible by 3" in " ".join(number_facts(111))
    assert "Rounded to the nearest ten it becomes 90" in " ".join(number_facts(85 + 0))
    words = " ".join(word_facts("teapot"))
    assert "6 letters" in words and "3 vowels (e, a, o)" in words and '"topaet"' in words
    assert "The letters t appear more than once" in words


def test_long_answers_like_the_study(fake_pyrit):
    """Benign and harmful answers are long: most rows are cut at 128 tokens, as the study's."""
    rows = build_task("harmful-m", "paper", seed=42)["train"]
    for label in ("harmful", "benign"):
        words = sorted(len(e.response.split()) for e in rows if e.label == label)
        assert words[len(words) // 2] >= 90, (label, words[len(words) // 2])


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


@needs_pyrit
def test_real_requests_answers_vary_and_carry_no_operational_content():
    rows = harmful_only(build_task("harmful-l", "paper"))
    assert len({e.response for e in rows}) >= 0.9 * len(rows)
    for ex in rows:
        assert not operational_words(ex.response, ex.prompt), ex.response
