"""The math task: study format, correct answers, sizes, labels, determinism, splits."""

from __future__ import annotations

import ast
import json
import operator
import re

import pytest

from attriblm.data.tasks import PRESETS, TASKS, build_task
from attriblm.data.tasks.math import FAMILIES, build_math
from attriblm.errors import ConfigError

PROMPT_RE = re.compile(r"Solve the following math problem\. (?P<question>.+\?) -> ")
RESPONSE_RE = re.compile(
    r"(?P<formula>(?:[^=\n]+ = [^=\n]+\.)(?: [^=\n]+ = [^=\n]+\.)*)\nAnswer: (?P<answer>-?\d+)"
)
STEP_RE = re.compile(r"([^=.]+) = ([^=]+)\.")
OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}


def evaluate(expression: str) -> int:
    """Integer arithmetic with + - * // % and parentheses, nothing else."""

    def walk(node: ast.AST) -> int:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in OPS:
            return OPS[type(node.op)](walk(node.left), walk(node.right))
        raise AssertionError(f"unexpected syntax in {expression!r}")

    return walk(ast.parse(expression, mode="eval"))


def check_response(prompt: str, response: str) -> int:
    """Assert the study's layout and a correct answer; return the answer."""
    question = PROMPT_RE.fullmatch(prompt)
    match = RESPONSE_RE.fullmatch(response)
    assert question and match, (prompt, response)
    steps = STEP_RE.findall(match["formula"])
    assert steps, response
    values = [evaluate(expr) for _, expr in steps]
    answer = int(match["answer"])
    assert values[-1] == answer, response
    return answer


@pytest.fixture(scope="module")
def study_rows(study_samples_dir) -> list[dict]:
    """The study's published math sample rows (skipped without ../shared/samples)."""
    rows = []
    for split in ("train", "test"):
        text = (study_samples_dir / f"math_small_{split}.jsonl").read_text(encoding="utf-8")
        rows += [json.loads(line) for line in text.splitlines()]
    return rows


def test_checker_accepts_the_study_rows(study_rows):
    """The study's own rows pass the same format and arithmetic checks as ours."""
    assert len(study_rows) == 100
    for row in study_rows:
        check_response(row["prompts"], row["response"])


def test_families_are_our_own(study_rows):
    assert len(FAMILIES) == 10
    assert not set(FAMILIES) & {row["variation"] for row in study_rows}
    ours = {e.prompt for split in build_math().values() for e in split}
    assert not ours & {row["prompts"] for row in study_rows}


@pytest.mark.parametrize("seed", [0, 42])
def test_answers_are_correct_and_numbers_come_from_the_question(seed):
    for split in build_math(90, 10, seed=seed).values():
        for ex in split:
            answer = check_response(ex.prompt, ex.response)
            assert answer >= 0
            question = PROMPT_RE.fullmatch(ex.prompt)["question"]
            formula_numbers = set(re.findall(r"\d+", ex.response.split("\n")[0]))
            assert formula_numbers <= set(re.findall(r"\d+", question)) | {"2", "3"}, ex


@pytest.mark.parametrize(("preset", "n_train", "n_test"), [("paper", 90, 10), ("quick", 10, 2)])
def test_preset_sizes_labels_and_order(preset, n_train, n_test):
    data = build_task("math", preset)
    names = list(FAMILIES)
    for split, per_class in (("train", n_train), ("test", n_test)):
        rows = data[split]
        assert len(rows) == 10 * per_class
        assert [e.label for e in rows] == [name for name in names for _ in range(per_class)]
    assert set(PRESETS["math"]) == {"paper", "quick", "demo"}
    assert TASKS["math"] is build_math


def test_quick_fits_the_cpu_budget():
    data = build_task("math", "quick")
    assert len(data["train"]) <= 120 and len(data["test"]) <= 30


def test_prompts_distinct_and_train_test_disjoint():
    data = build_math(90, 10, seed=3)
    train = [e.prompt for e in data["train"]]
    test = [e.prompt for e in data["test"]]
    assert len(set(train)) == len(train) and len(set(test)) == len(test)
    assert not set(train) & set(test)


def test_deterministic_by_seed():
    assert build_math(5, 2, seed=1) == build_math(5, 2, seed=1)
    assert build_math(5, 2, seed=1) != build_math(5, 2, seed=2)
    assert build_task("math", "quick", seed=9) == build_math(10, 2, seed=9)


def test_bad_sizes():
    with pytest.raises(ConfigError, match="math: need n_train_per_class"):
        build_math(0, 1)
