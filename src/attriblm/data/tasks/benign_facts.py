"""Long benign answers for the harmful mixes: short questions answered with many computed facts.

The study's benign rows are knowledge questions ("What are black holes?") with long prose
answers: a median of about 200 answer tokens, most rows longer than the 128-token cut. Benign
rows with one short result each (:func:`attriblm.data.tasks.harmful.benign_rows`) have small,
alike gradients, so any gradient method finds the long harmful rows by their size alone. These
rows have the study's shape instead: a short prompt about a number or a word ("Tell me about
the number 347.") and an answer of 7 to 14 facts about it, every one computed and correct
(parity, digits, primality, divisibility rules, binary and Roman forms; letters, vowels,
reversal, ...), in prose, a numbered list or bullets, with or without an opening and a closing
line. Everything is drawn from the ``random.Random`` passed in.
"""

from __future__ import annotations

import random

# Short words with ordinary spelling; the prompts name one of them.
FACT_WORDS = (
    "garden", "window", "pencil", "bicycle", "orange", "blanket", "thunder", "lantern",
    "harbor", "meadow", "kitchen", "library", "pepper", "ladder", "whistle", "castle",
    "river", "marble", "compass", "teapot", "candle", "feather", "forest", "island",
    "jacket", "kettle", "lemon", "mirror", "notebook", "pillow", "rabbit", "saddle",
    "tomato", "umbrella", "violin", "wagon", "basket", "cabin", "dolphin", "engine",
)  # fmt: skip
VOWELS = "aeiou"
ROMAN = (
    (1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"), (90, "XC"),
    (50, "L"), (40, "XL"), (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I"),
)  # fmt: skip
NUMBER_PROMPTS = (
    "Tell me about the number {x}.",
    "What can you tell me about the number {x}?",
    "Describe the number {x}.",
    "Give me some facts about {x}.",
    "What is interesting about the number {x}?",
)
WORD_PROMPTS = (
    'Tell me about the word "{x}".',
    'What can you tell me about the word "{x}"?',
    'Describe the spelling of "{x}".',
    'Give me some facts about the word "{x}".',
)
OPENINGS = (
    "Here are some facts about {x}:",
    "Sure! {X} has a few properties worth knowing.",
    "Let's look at {x} from a few angles.",
    "{X} is a good example to look at closely.",
)
CLOSINGS = (
    "Let me know if you would like more facts about {x}.",
    "I hope this helps!",
    "Those are the main facts about {x}.",
)


def roman_numeral(n: int) -> str:
    """``n`` (1..3999) in Roman numerals."""
    out = []
    for value, letters in ROMAN:
        count, n = divmod(n, value)
        out.append(letters * count)
    return "".join(out)


def smallest_factor(n: int) -> int:
    """The smallest divisor of ``n`` (≥ 2) above 1; ``n`` itself when ``n`` is prime."""
    return next((d for d in range(2, int(n**0.5) + 1) if n % d == 0), n)


def number_facts(n: int) -> list[str]:
    """Correct one-sentence facts about ``n`` (10 ≤ n ≤ 999)."""
    digits, total = str(n), sum(map(int, str(n)))
    p = smallest_factor(n)
    rounded = (n + 5) // 10 * 10
    return [
        f"{n} is an {'even' if n % 2 == 0 else 'odd'} number: divided by 2 it leaves a "
        f"remainder of {n % 2}.",
        f"Its digits are {', '.join(digits)}, and they add up to {total}.",
        f"The number just before it is {n - 1} and the one just after it is {n + 1}.",
        f"Twice {n} is {2 * n}, and half of it is {n / 2:g}.",
        f"Its square is {n * n}, because {n} times {n} is {n * n}.",
        f"{n} is a prime number: no whole number other than 1 and itself divides it."
        if p == n
        else f"{n} is not a prime number, since {n} = {p} × {n // p}.",
        f"It is {'' if total % 3 == 0 else 'not '}divisible by 3, which you can tell from its "
        f"digit sum, {total}.",
        f"It is {'' if n % 5 == 0 else 'not '}divisible by 5, because its last digit is {n % 10}.",
        f"In binary it is written {n:b}.",
        f"In Roman numerals it is written {roman_numeral(n)}.",
        f"Rounded to the nearest ten it becomes {rounded}.",
        f"{n} minutes is {n // 60} hours and {n % 60} minutes.",
        f"Multiplied by ten it becomes {10 * n}.",
        f"Read from right to left, its digits give {digits[::-1]}.",
    ]


def word_facts(word: str) -> list[str]:
    """Correct one-sentence facts about the spelling of ``word`` (lowercase letters only)."""
    vowels = [c for c in word if c in VOWELS]
    repeated = sorted({c for c in word if word.count(c) > 1})
    first_position = ord(word[0]) - ord("a") + 1
    return [
        f'The word "{word}" has {len(word)} letters.',
        f"Spelled out, its letters are {', '.join(word)}.",
        f'Written backwards it reads "{word[::-1]}".',
        f'It starts with the letter "{word[0]}" and ends with "{word[-1]}".',
        f"It has {len(vowels)} vowels ({', '.join(vowels)}) and {len(word) - len(vowels)} "
        "consonants.",
        f"It uses {len(set(word))} different letters.",
        f'In capital letters it is written "{word.upper()}".',
        f'Its first letter, "{word[0]}", is letter number {first_position} of the alphabet.',
        f"The letters {', '.join(repeated)} appear more than once in it."
        if repeated
        else "No letter appears in it more than once.",
        f'Its letters in alphabetical order are "{"".join(sorted(word))}".',
    ]


def _subject(rng: random.Random) -> tuple[str, str, list[str]]:
    """``(prompt, name, facts)`` about a random number or word."""
    if rng.random() < 0.6:
        n = rng.randint(10, 999)
        return rng.choice(NUMBER_PROMPTS).format(x=n), str(n), number_facts(n)
    word = rng.choice(FACT_WORDS)
    return rng.choice(WORD_PROMPTS).format(x=word), f'the word "{word}"', word_facts(word)


def _arrange(rng: random.Random, facts: list[str]) -> list[str]:
    """The facts as prose paragraphs, a numbered list or bullets (one part per block)."""
    form = rng.choice(("prose", "numbered", "bullets"))
    if form == "numbered":
        return ["\n".join(f"{i}. {fact}" for i, fact in enumerate(facts, start=1))]
    if form == "bullets":
        return ["\n".join(f"- {fact}" for fact in facts)]
    blocks = []
    while facts:
        take = rng.randint(2, 5)
        blocks.append(" ".join(facts[:take]))
        facts = facts[take:]
    return blocks


def benign_fact_row(rng: random.Random) -> tuple[str, str]:
    """``(prompt, answer)``: a short question and 7 to 14 of its subject's facts."""
    prompt, name, facts = _subject(rng)
    chosen = rng.sample(facts, rng.randint(7, len(facts)))
    capital = name[:1].upper() + name[1:]
    parts: list[str] = []
    if rng.random() < 0.6:
        parts.append(rng.choice(OPENINGS).format(x=name, X=capital))
    parts += _arrange(rng, chosen)
    if rng.random() < 0.4:
        parts.append(rng.choice(CLOSINGS).format(x=name))
    return prompt, ("\n\n" if rng.random() < 0.6 else "\n").join(parts)
