"""The ``grammars`` class-attribution task: 10 string-rewrite rules (docs/DESIGN.md §6).

Each row shows a sentence and its rewrite under one rule; the response and the label
(``variation``) are the rule's name::

    prompt:   Determine the grammar rule: <sentence> -> <rewritten>
    response: <rule name>

The rules reproduce the study's rows exactly (checked against its public samples): words are
split on whitespace and punctuation stays attached to its word (``night.`` reversed stays
``night.``, gets ``ly`` appended as ``night.ly``); vowels are ``aeiou`` (``y`` is a consonant);
"every other letter" alternates over character positions of the whole sentence, spaces and
punctuation included (odd positions upper case, even lower case).

Sentences (3-5 words, ending in ``.``) are generated offline from the word lists below. As in
the study, every rule is applied to the same sentences: the first ``n_train_per_class`` go to
train and the next ``n_test_per_class`` to test, so no test sentence appears in train at all.
Rows are ordered class by class, in :data:`RULES` order.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable

from attriblm.data.schema import Example
from attriblm.errors import ConfigError

VOWELS = frozenset("aeiouAEIOU")
CONSONANTS = frozenset(string.ascii_letters) - VOWELS
PROMPT = "Determine the grammar rule: {sentence} -> {rewritten}"


def reverse_words(s: str) -> str:
    return " ".join(reversed(s.split()))


def capitalize_every_other_letter(s: str) -> str:
    return "".join(c.upper() if i % 2 else c.lower() for i, c in enumerate(s))


def insert_number_1(s: str) -> str:
    return " 1 ".join(s.split())


def replace_vowels_with_star(s: str) -> str:
    return "".join("*" if c in VOWELS else c for c in s)


def double_every_consonant(s: str) -> str:
    return "".join(c * 2 if c in CONSONANTS else c for c in s)


def capitalize_every_word(s: str) -> str:
    return " ".join(w[:1].upper() + w[1:] for w in s.split())


def remove_all_vowels(s: str) -> str:
    return "".join(c for c in s if c not in VOWELS)


def add_ly(s: str) -> str:
    return " ".join(w + "ly" for w in s.split())


def remove_all_consonants(s: str) -> str:
    return "".join(c for c in s if c not in CONSONANTS)


def repeat_each_word_twice(s: str) -> str:
    return " ".join(f"{w} {w}" for w in s.split())


# Rule name (the study's response / variation string) -> rewrite, in the study's class order.
RULES: dict[str, Callable[[str], str]] = {
    "Reverse Order of Words": reverse_words,
    "Capitalize Every Other Letter": capitalize_every_other_letter,
    "Insert Number 1 Between Every Word": insert_number_1,
    "Replace Vowels with *": replace_vowels_with_star,
    "Double Every Consonant": double_every_consonant,
    "Capitalize Every Word": capitalize_every_word,
    "Remove All Vowels": remove_all_vowels,
    "Add 'ly' To End of Each Word": add_ly,
    "Remove All Consonants": remove_all_consonants,
    "Repeat Each Word Twice": repeat_each_word_twice,
}

# Every word has a vowel and a consonant, so no rule empties a word.
ADJECTIVES = (
    "ancient",
    "bright",
    "calm",
    "crimson",
    "distant",
    "frozen",
    "gentle",
    "hidden",
    "hollow",
    "humble",
    "lonely",
    "misty",
    "narrow",
    "patient",
    "quiet",
    "restless",
    "sleepy",
    "silver",
    "tender",
    "velvet",
    "wild",
    "brave",
    "eager",
    "faded",
)
NOUNS = (
    "rivers",
    "candles",
    "mountains",
    "sparrows",
    "lanterns",
    "meadows",
    "forests",
    "oceans",
    "clouds",
    "echoes",
    "pebbles",
    "gardens",
    "harbors",
    "comets",
    "willows",
    "bridges",
    "storms",
    "petals",
    "islands",
    "violins",
    "foxes",
    "bells",
    "roads",
    "kites",
)
VERBS = (
    "drift",
    "glow",
    "wander",
    "linger",
    "tremble",
    "shimmer",
    "rest",
    "gather",
    "hum",
    "sway",
    "fade",
    "rise",
    "sing",
    "murmur",
    "sleep",
    "travel",
    "bloom",
    "flicker",
    "ripple",
    "settle",
    "return",
    "vanish",
    "listen",
    "dream",
)
ADVERBS = (
    "slowly",
    "softly",
    "gently",
    "quietly",
    "often",
    "together",
    "brightly",
    "rarely",
    "freely",
    "calmly",
    "silently",
    "tonight",
    "forever",
    "outside",
    "again",
    "below",
    "easily",
    "warmly",
    "patiently",
    "boldly",
)
PREPOSITIONS = (
    "near",
    "beyond",
    "under",
    "across",
    "beside",
    "through",
    "over",
    "around",
    "behind",
    "toward",
    "along",
    "inside",
    "above",
    "between",
    "among",
    "within",
)

# Sentence shapes (3, 4, 4 and 5 words).
SHAPES: tuple[tuple[tuple[str, ...], ...], ...] = (
    (ADJECTIVES, NOUNS, VERBS),
    (ADJECTIVES, NOUNS, VERBS, ADVERBS),
    (NOUNS, VERBS, PREPOSITIONS, NOUNS),
    (ADJECTIVES, NOUNS, VERBS, PREPOSITIONS, NOUNS),
)


def random_sentence(rng: random.Random) -> str:
    """One sentence such as ``Quiet rivers drift beyond bridges.``."""
    shape = SHAPES[rng.randrange(len(SHAPES))]
    text = " ".join(rng.choice(words) for words in shape)
    return text[0].upper() + text[1:] + "."


def generate_sentences(n: int, seed: int) -> list[str]:
    """``n`` distinct sentences, deterministic in ``seed``."""
    rng = random.Random(seed)
    seen: dict[str, None] = {}
    for _ in range(100 * n + 1000):
        if len(seen) == n:
            break
        seen.setdefault(random_sentence(rng), None)
    if len(seen) < n:
        raise ConfigError(f"grammars: cannot generate {n} distinct sentences; ask for fewer")
    return list(seen)


def make_example(rule: str, sentence: str) -> Example:
    prompt = PROMPT.format(sentence=sentence, rewritten=RULES[rule](sentence))
    return Example(prompt=prompt, response=rule, label=rule)


def build_grammars(
    n_train_per_class: int = 90, n_test_per_class: int = 10, seed: int = 42
) -> dict[str, list[Example]]:
    """``{"train": [...], "test": [...]}``: every rule on each train / test sentence.

    Rows are ordered class by class (rule order), sentences in the same order within each class.
    """
    if n_train_per_class < 1 or n_test_per_class < 0:
        raise ConfigError(
            "grammars: need n_train_per_class >= 1 and n_test_per_class >= 0, got "
            f"{n_train_per_class} and {n_test_per_class}"
        )
    sentences = generate_sentences(n_train_per_class + n_test_per_class, seed)
    train_sentences = sentences[:n_train_per_class]
    test_sentences = sentences[n_train_per_class:]
    return {
        "train": [make_example(rule, s) for rule in RULES for s in train_sentences],
        "test": [make_example(rule, s) for rule in RULES for s in test_sentences],
    }
