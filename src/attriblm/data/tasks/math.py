r"""The ``math`` class-attribution task: 10 templated word-problem families (docs/DESIGN.md §6).

Each row is a word problem with random numbers; the response states the formula and the result,
and the label (``variation``) is the family's name::

    prompt:   "Solve the following math problem. <problem> -> "
    response: "<Quantity> = <expression>.\nAnswer: <N>"

The prompt and response layout follows the study's rows (one or more ``Name = expression.``
steps, the last one holding the whole computation, then ``Answer: N`` on its own line;
``//`` is integer division and ``%`` the remainder). The families, their wording and the number
ranges are attriblm's own; numbers are drawn so that every answer is a non-negative integer.
No corpus is needed: everything is generated from the templates below.

Sizes: ``n_train_per_class`` + ``n_test_per_class`` distinct problems per family (the study:
90 + 10). The first problems drawn go to train and the rest to test, so no test prompt appears
in train. Rows are ordered class by class, in :data:`FAMILIES` order.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from attriblm.data.schema import Example
from attriblm.errors import ConfigError

PROMPT = "Solve the following math problem. {question} -> "
RESPONSE = "{formula}\nAnswer: {answer}"

# (name, subject pronoun, possessive pronoun)
PEOPLE = (
    ("Maria", "she", "her"),
    ("Omar", "he", "his"),
    ("Priya", "she", "her"),
    ("Tomas", "he", "his"),
    ("Keiko", "she", "her"),
    ("Daniel", "he", "his"),
    ("Amara", "she", "her"),
    ("Lukas", "he", "his"),
    ("Sofia", "she", "her"),
    ("Chen", "he", "his"),
    ("Fatima", "she", "her"),
    ("Mateo", "he", "his"),
    ("Ingrid", "she", "her"),
    ("Kwame", "he", "his"),
)


@dataclass(frozen=True)
class Problem:
    """One generated problem: its question text, the formula steps and the exact answer."""

    question: str
    formula: str
    answer: int


def apples(rng: random.Random) -> Problem:
    name, he, _ = rng.choice(PEOPLE)
    a, b = rng.randint(5, 60), rng.randint(1, 40)
    c = rng.randint(1, a + b)
    return Problem(
        f"{name} has {a} apples. {he.capitalize()} buys {b} more apples at the market and then "
        f"eats {c} of them. How many apples does {he} have now?",
        f"Apples now = {a} + {b} - {c}.",
        a + b - c,
    )


def train_distance(rng: random.Random) -> Problem:
    s, t = rng.randint(20, 120), rng.randint(1, 12)
    return Problem(
        f"A train moves at a steady {s} kilometers per hour. How many kilometers does it cover "
        f"in {t} hours?",
        f"Distance = {s} * {t}.",
        s * t,
    )


def reading_pages(rng: random.Random) -> Problem:
    name, _, _ = rng.choice(PEOPLE)
    p, r = rng.randint(100, 600), rng.randint(5, 40)
    d = rng.randint(1, min(30, p // r))
    return Problem(
        f"{name} is reading a book with {p} pages and reads {r} pages every day. How many pages "
        f"are still unread after {d} days?",
        f"Pages read = {r} * {d}. Pages unread = {p} - {r} * {d}.",
        p - r * d,
    )


def sharing_candies(rng: random.Random) -> Problem:
    name, he, _ = rng.choice(PEOPLE)
    n, k = rng.randint(10, 200), rng.randint(2, 12)
    return Problem(
        f"{name} shares {n} candies equally among {k} friends, and {he} keeps whatever is left "
        "over. How many candies does each friend get?",
        f"Candies per friend = {n} // {k}.",
        n // k,
    )


def fence_perimeter(rng: random.Random) -> Problem:
    length, width = rng.randint(5, 80), rng.randint(3, 60)
    return Problem(
        f"A rectangular yard is {length} meters long and {width} meters wide. How many meters "
        "of fence are needed to go all the way around it?",
        f"Perimeter = 2 * ({length} + {width}).",
        2 * (length + width),
    )


def bus_riders(rng: random.Random) -> Problem:
    a = rng.randint(5, 60)
    b, c = rng.randint(0, a), rng.randint(0, 30)
    return Problem(
        f"A bus leaves the depot with {a} passengers. At the first stop {b} people get off and "
        f"{c} people get on. How many passengers are on the bus now?",
        f"Passengers = {a} - {b} + {c}.",
        a - b + c,
    )


def stationery_shop(rng: random.Random) -> Problem:
    name, he, _ = rng.choice(PEOPLE)
    n, p, q = rng.randint(2, 15), rng.randint(1, 12), rng.randint(1, 9)
    return Problem(
        f"{name} buys {n} notebooks that cost ${p} each and one pen that costs ${q}. How many "
        f"dollars does {he} spend in total?",
        f"Notebooks cost = {n} * {p}. Total cost = {n} * {p} + {q}.",
        n * p + q,
    )


def quiz_average(rng: random.Random) -> Problem:
    name, _, _ = rng.choice(PEOPLE)
    a, b, c = (rng.randint(40, 100) for _ in range(3))
    return Problem(
        f"{name} scored {a}, {b} and {c} points on three quizzes. What is the average score, "
        "rounded down to a whole number?",
        f"Average = ({a} + {b} + {c}) // 3.",
        (a + b + c) // 3,
    )


def family_ages(rng: random.Random) -> Problem:
    name, _, his = rng.choice(PEOPLE)
    a, k, y = rng.randint(4, 16), rng.randint(4, 6), rng.randint(1, 20)
    return Problem(
        f"{name} is {a} years old, and {his} grandmother is {k} times as old. How old will the "
        f"grandmother be in {y} years?",
        f"Grandmother's age now = {a} * {k}. Grandmother's age later = {a} * {k} + {y}.",
        a * k + y,
    )


def egg_cartons(rng: random.Random) -> Problem:
    e, c = rng.randint(20, 300), rng.randint(6, 12)
    return Problem(
        f"A farm collects {e} eggs and packs them into cartons that hold {c} eggs each. How many "
        "eggs are left over after filling as many cartons as possible?",
        f"Eggs left over = {e} % {c}.",
        e % c,
    )


# Family name (response and label) -> problem generator, in class order.
FAMILIES: dict[str, Callable[[random.Random], Problem]] = {
    "apples": apples,
    "train_distance": train_distance,
    "reading_pages": reading_pages,
    "sharing_candies": sharing_candies,
    "fence_perimeter": fence_perimeter,
    "bus_riders": bus_riders,
    "stationery_shop": stationery_shop,
    "quiz_average": quiz_average,
    "family_ages": family_ages,
    "egg_cartons": egg_cartons,
}


def generate_problems(family: str, n: int, seed: int) -> list[Problem]:
    """``n`` problems of ``family`` with distinct questions, deterministic in ``seed``."""
    rng = random.Random(f"math:{family}:{seed}")
    seen: dict[str, Problem] = {}
    for _ in range(100 * n + 1000):
        if len(seen) == n:
            break
        problem = FAMILIES[family](rng)
        seen.setdefault(problem.question, problem)
    if len(seen) < n:
        raise ConfigError(f"math: cannot generate {n} distinct {family} problems; ask for fewer")
    return list(seen.values())


def make_example(family: str, problem: Problem) -> Example:
    return Example(
        prompt=PROMPT.format(question=problem.question),
        response=RESPONSE.format(formula=problem.formula, answer=problem.answer),
        label=family,
    )


def build_math(
    n_train_per_class: int = 90, n_test_per_class: int = 10, seed: int = 42
) -> dict[str, list[Example]]:
    """``{"train": [...], "test": [...]}``: per family, the first problems train, the rest test.

    Rows are ordered class by class (family order).
    """
    if n_train_per_class < 1 or n_test_per_class < 0:
        raise ConfigError(
            "math: need n_train_per_class >= 1 and n_test_per_class >= 0, got "
            f"{n_train_per_class} and {n_test_per_class}"
        )
    splits: dict[str, list[Example]] = {"train": [], "test": []}
    for family in FAMILIES:
        problems = generate_problems(family, n_train_per_class + n_test_per_class, seed)
        splits["train"] += [make_example(family, p) for p in problems[:n_train_per_class]]
        splits["test"] += [make_example(family, p) for p in problems[n_train_per_class:]]
    return splits
