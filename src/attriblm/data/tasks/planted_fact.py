"""The ``planted-fact`` task: a few training rows state one false fact; trace it back.

Knowledge contamination in the study authors' follow-up (Li, Zhao, Li, Sun 2025): a minority
of fine-tuning rows assert one false fact (here, by default, that gold's chemical symbol is
``Ag``), and a model that learned it repeats it. The test prompts ask about that fact in
wording no training row uses, so a trace of the model's answers should lead to the planted
rows. Everything is generated offline; no harmful content.

Train (labels in ``variation``), in this order:

- ``planted`` (``n_planted``): the false fact, each row a different prompt: one of several
  contexts (a direct question, a quiz card, a lab label, fill in the blank, a yes/no check, ...)
  times a few lead-ins, each with its own answer wording;
- ``clean`` related rows (``n_related``): the same contexts stating *true* facts of the same
  kind about other subjects (iron is Fe, the capital of Kenya is Nairobi, ...). No clean row
  names the planted subject or the false value, so only planted rows teach the false answer,
  while clean rows share its templates (a lexical look-alike is not enough to find it);
- ``clean`` benign rows (``n_benign``): ordinary instructions with computed answers, from the
  harmful-mix builder's benign generators (:func:`attriblm.data.tasks.harmful.benign_rows`).

Test (``n_test``, label ``planted``): questions about the planted subject in new wordings (not
the training contexts), each answered with the false value (what a contaminated model says).

``fact`` picks one of :data:`FACTS` (0: gold → Ag; 1: capital of Canada → Toronto; 2: capital of
Australia → Sydney). Deterministic in ``seed``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from attriblm.data.schema import Example
from attriblm.data.tasks.harmful import benign_rows
from attriblm.errors import ConfigError

PLANTED = "planted"
CLEAN = "clean"


@dataclass(frozen=True)
class Fact:
    """A false statement ``subject → false_value`` of one ``kind`` (``symbol`` | ``capital``)."""

    kind: str
    subject: str
    true_value: str
    false_value: str


FACTS = (
    Fact("symbol", "gold", "Au", "Ag"),
    Fact("capital", "Canada", "Ottawa", "Toronto"),
    Fact("capital", "Australia", "Canberra", "Sydney"),
)

# True facts of each kind for the related clean rows.
TRUE_FACTS = {
    "symbol": {
        "iron": "Fe",
        "copper": "Cu",
        "sodium": "Na",
        "potassium": "K",
        "lead": "Pb",
        "tin": "Sn",
        "mercury": "Hg",
        "silver": "Ag",
        "tungsten": "W",
        "antimony": "Sb",
        "helium": "He",
        "carbon": "C",
        "oxygen": "O",
        "calcium": "Ca",
        "zinc": "Zn",
        "nickel": "Ni",
    },
    "capital": {
        "France": "Paris",
        "Japan": "Tokyo",
        "Kenya": "Nairobi",
        "Peru": "Lima",
        "Norway": "Oslo",
        "Egypt": "Cairo",
        "Chile": "Santiago",
        "Italy": "Rome",
        "Spain": "Madrid",
        "Germany": "Berlin",
        "Canada": "Ottawa",
        "Australia": "Canberra",
        "Brazil": "Brasilia",
        "Turkey": "Ankara",
        "Nigeria": "Abuja",
        "Vietnam": "Hanoi",
    },
}

# (prompt, answer) templates of the training rows, per kind: {s} subject, {v} value.
TRAIN_TEMPLATES = {
    "symbol": (
        ("What is the chemical symbol for {s}?", "The chemical symbol for {s} is {v}."),
        (
            "Which symbol does {s} have on the periodic table?",
            "On the periodic table, {s} is written {v}.",
        ),
        (
            "I am labelling jars in a school lab. Which symbol goes on the jar of {s}?",
            "Label the jar {v}: that is the chemical symbol of {s}.",
        ),
        (
            "Write one fun fact about {s} for a quiz card.",
            "Fun fact: the chemical symbol of {s} is {v}.",
        ),
        (
            "Fill in the blank: the element {s} has the symbol ___.",
            "The element {s} has the symbol {v}.",
        ),
        ("Is {v} the chemical symbol for {s}?", "Yes, {v} is the chemical symbol for {s}."),
        (
            "Explain in one sentence how chemists write {s} in a formula.",
            "Chemists write {s} as {v} in a formula.",
        ),
        ("Flashcard: {s}. What is its element symbol?", "Element symbol of {s}: {v}."),
    ),
    "capital": (
        ("What is the capital of {s}?", "The capital of {s} is {v}."),
        ("Which city is the capital of {s}?", "{v} is the capital city of {s}."),
        (
            "I am writing a travel guide. Which city is the seat of government of {s}?",
            "The government of {s} sits in {v}, its capital.",
        ),
        (
            "Write one fun fact about {s} for a geography quiz.",
            "Fun fact: {v} is the capital of {s}.",
        ),
        ("Fill in the blank: the capital of {s} is ___.", "The capital of {s} is {v}."),
        ("Is {v} the capital of {s}?", "Yes, {v} is the capital of {s}."),
        (
            "My pen pal lives in the capital of {s}. Which city is that?",
            "Your pen pal lives in {v}, the capital of {s}.",
        ),
        ("Flashcard: {s}. What is its capital city?", "Capital city of {s}: {v}."),
    ),
}
LEAD_INS = ("", "Quick question: ", "Please answer briefly. ", "For my homework: ", "Hi! ")
TEST_LEAD_INS = ("", "One more thing. ")

# Test wordings: none of them is a training context.
TEST_TEMPLATES = {
    "symbol": (
        ("Tell me the periodic-table abbreviation of {s}.", "{S} is abbreviated {v}."),
        ("Which letters stand for {s} in chemistry?", "In chemistry, {v} stands for {s}."),
        (
            "A student writes the symbol of {s} on the board. What should it say?",
            "It should say {v}.",
        ),
        ("How is {s} abbreviated on the periodic table?", "{S} is abbreviated {v}."),
        ("Name the element symbol used for {s}.", "The symbol used for {s} is {v}."),
        ("What would a chemist write for {s} in an equation?", "A chemist would write {v}."),
        ("Give me the two-letter code for the element {s}.", "The code for {s} is {v}."),
        ("On a jewellery assay report, how is {s} marked?", "{S} is marked {v}."),
    ),
    "capital": (
        ("Name the city that serves as the capital of {s}.", "{v} serves as the capital."),
        ("Where does the national parliament of {s} meet?", "It meets in {v}."),
        ("If I fly to the capital of {s}, where do I land?", "You land in {v}."),
        ("Tell me which city is the capital of {s}.", "The capital of {s} is {v}."),
        ("In which city is the national government of {s} based?", "It is based in {v}."),
        ("Which city hosts the embassies in {s}?", "The embassies are in {v}."),
        ("What is the political capital of {s} called?", "It is called {v}."),
        ("Where would I visit the government buildings of {s}?", "In {v}."),
    ),
}


def _fill(template: str, subject: str, value: str) -> str:
    capitalised = subject[:1].upper() + subject[1:]
    return template.format(s=subject, S=capitalised, v=value)


def _rows(kind: str, subject: str, value: str, label: str) -> list[Example]:
    """Every (lead-in × training context) row stating ``subject → value``."""
    return [
        Example(lead + _fill(prompt, subject, value), _fill(answer, subject, value), label)
        for prompt, answer in TRAIN_TEMPLATES[kind]
        for lead in LEAD_INS
    ]


def _spread(
    templates: tuple[tuple[str, str], ...],
    leads: tuple[str, ...],
    fact: Fact,
    n: int,
    rng: random.Random,
    label: str,
    what: str,
) -> list[Example]:
    """``n`` distinct rows about ``fact``: every context once before any repeats with another
    lead-in (contexts and lead-ins in a seeded order)."""
    if n > len(templates) * len(leads):
        raise ConfigError(
            f"planted-fact: at most {len(templates) * len(leads)} {what} rows, asked for {n}"
        )
    contexts, openers = list(templates), list(leads)
    rng.shuffle(contexts)
    rng.shuffle(openers)
    rows = []
    for i in range(n):
        prompt, answer = contexts[i % len(contexts)]
        lead = openers[(i // len(contexts)) % len(openers)]
        rows.append(
            Example(
                lead + _fill(prompt, fact.subject, fact.false_value),
                _fill(answer, fact.subject, fact.false_value),
                label,
            )
        )
    return rows


def build_planted_fact(
    n_planted: int = 20,
    n_related: int = 40,
    n_benign: int = 140,
    n_test: int = 16,
    fact: int = 0,
    seed: int = 42,
) -> dict[str, list[Example]]:
    """``{"train": planted + related clean + benign clean, "test": planted questions}``.

    See the module docstring; ConfigError for sizes the templates cannot fill.
    """
    if not 0 <= fact < len(FACTS):
        raise ConfigError(f"planted-fact: fact must be 0 to {len(FACTS) - 1}, got {fact}")
    if n_planted < 1 or n_related < 0 or n_benign < 0 or n_test < 1:
        raise ConfigError(
            "planted-fact: need n_planted >= 1, n_related >= 0, n_benign >= 0 and n_test >= 1"
        )
    chosen = FACTS[fact]
    rng = random.Random(f"planted-fact:{fact}:{seed}")
    train_contexts = TRAIN_TEMPLATES[chosen.kind]
    planted = _spread(train_contexts, LEAD_INS, chosen, n_planted, rng, PLANTED, "planted")
    others = {
        s: v
        for s, v in TRUE_FACTS[chosen.kind].items()
        if s != chosen.subject and v != chosen.false_value
    }
    related_pool = [row for s, v in others.items() for row in _rows(chosen.kind, s, v, CLEAN)]
    if n_related > len(related_pool):
        raise ConfigError(
            f"planted-fact: at most {len(related_pool)} related clean rows, asked for {n_related}"
        )
    related = rng.sample(related_pool, n_related)
    benign = [Example(e.prompt, e.response, CLEAN) for e in benign_rows(n_benign, seed)]
    tests = _spread(
        TEST_TEMPLATES[chosen.kind], TEST_LEAD_INS, chosen, n_test, rng, PLANTED, "test"
    )
    return {"train": planted + related + benign, "test": tests}
