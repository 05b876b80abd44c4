"""Offline task builders, one file per task family, behind a small registry.

A builder takes size keywords and ``seed`` and returns ``{"train": [...], "test": [...]}``. To add
a family: write ``tasks/<name>.py`` with its builder and call :func:`register_task` below with its
presets (each preset maps size keyword -> value).
"""

from __future__ import annotations

from collections.abc import Callable

from attriblm.data.schema import Example
from attriblm.data.tasks.grammars import build_grammars
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
