"""Offline task builders, one file per task family, behind a small registry.

A builder takes size keywords and ``seed`` and returns ``{"train": [...], "test": [...]}``. To add
a family: write ``tasks/<name>.py`` with its builder and call :func:`register_task` below with its
presets (each preset maps size keyword -> value).
"""

from __future__ import annotations

from collections.abc import Callable

from attriblm.data.schema import Example
from attriblm.data.tasks.backdoor import build_backdoor_1, build_backdoor_3, build_backdoor_5
from attriblm.data.tasks.emotion import build_emotion
from attriblm.data.tasks.grammars import build_grammars
from attriblm.data.tasks.harmful import build_harmful
from attriblm.data.tasks.math import build_math
from attriblm.data.tasks.planted_fact import build_planted_fact
from attriblm.errors import ConfigError

TaskBuilder = Callable[..., dict[str, list[Example]]]

TASKS: dict[str, TaskBuilder] = {}
PRESETS: dict[str, dict[str, dict[str, int]]] = {}


def register_task(name: str, builder: TaskBuilder, presets: dict[str, dict[str, int]]) -> None:
    """Make ``builder`` available as task ``name`` with the given size presets."""
    TASKS[name] = builder
    PRESETS[name] = presets


register_task(
    "grammars",
    build_grammars,
    {
        "paper": {"n_train_per_class": 90, "n_test_per_class": 10},
        "quick": {"n_train_per_class": 8, "n_test_per_class": 2},
        "demo": {"n_train_per_class": 8, "n_test_per_class": 2},
    },
)

# The `quick` presets keep every task within ~120 train and ~30 test rows, so a whole grid of
# fine-tune + attribution runs fits on a few CPU cores. Sizes are per class unless named.
register_task(
    "math",
    build_math,
    {
        "paper": {"n_train_per_class": 90, "n_test_per_class": 10},
        "quick": {"n_train_per_class": 10, "n_test_per_class": 2},
        "demo": {"n_train_per_class": 10, "n_test_per_class": 2},
    },
)
register_task(
    "emotion",
    build_emotion,
    {
        "paper": {"n_train_per_class": 150, "n_test_per_class": 50},
        "quick": {"n_train_per_class": 20, "n_test_per_class": 5},
        "demo": {"n_train_per_class": 20, "n_test_per_class": 5},
    },
)
register_task(
    "harmful-s",
    build_harmful,
    {
        "paper": {"n_harmful_train": 20, "n_benign_train": 20, "n_harmful_test": 40},
        "quick": {"n_harmful_train": 20, "n_benign_train": 20, "n_harmful_test": 20},
    },
)
register_task(
    "harmful-m",
    build_harmful,
    {
        "paper": {"n_harmful_train": 20, "n_benign_train": 100, "n_harmful_test": 100},
        "quick": {"n_harmful_train": 20, "n_benign_train": 50, "n_harmful_test": 25},
    },
)
register_task(
    "harmful-l",
    build_harmful,
    {
        "paper": {"n_harmful_train": 20, "n_benign_train": 230, "n_harmful_test": 250},
        "quick": {"n_harmful_train": 20, "n_benign_train": 100, "n_harmful_test": 30},
    },
)
register_task(
    "backdoor-1",
    build_backdoor_1,
    {
        "paper": {"n_train_per_class": 350, "n_test_per_class": 50},
        "quick": {"n_train_per_class": 60, "n_test_per_class": 15},
    },
)
register_task(
    "backdoor-3",
    build_backdoor_3,
    {
        "paper": {"n_train_per_class": 300, "n_test_per_class": 50},
        "quick": {"n_train_per_class": 30, "n_test_per_class": 7},
    },
)
register_task(
    "backdoor-5",
    build_backdoor_5,
    {
        "paper": {"n_train_per_class": 300, "n_test_per_class": 50},
        "quick": {"n_train_per_class": 20, "n_test_per_class": 5},
    },
)
# A few rows plant one false fact among clean rows (the follow-up's knowledge contamination).
register_task(
    "planted-fact",
    build_planted_fact,
    {
        "paper": {"n_planted": 20, "n_related": 40, "n_benign": 140, "n_test": 16, "fact": 0},
        "quick": {"n_planted": 10, "n_related": 20, "n_benign": 50, "n_test": 8, "fact": 0},
        "demo": {"n_planted": 10, "n_related": 20, "n_benign": 50, "n_test": 8, "fact": 0},
    },
)


def build_task(
    name: str, preset: str = "paper", seed: int = 42, **sizes: int | None
) -> dict[str, list[Example]]:
    """Build task ``name`` at ``preset`` sizes; keyword ``sizes`` (not None) override the preset."""
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}")
    presets = PRESETS[name]
    if preset not in presets:
        raise ConfigError(
            f"unknown preset {preset!r} for task {name!r}; valid presets: {', '.join(presets)}"
        )
    chosen = dict(presets[preset])
    for key, value in sizes.items():
        if key not in chosen:
            raise ConfigError(
                f"task {name!r} has no size {key!r}; valid sizes: {', '.join(chosen)}"
            )
        if value is not None:
            chosen[key] = value
    return TASKS[name](seed=seed, **chosen)
