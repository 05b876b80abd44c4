"""Progress for long stages: rich bars (counts, rates) or JSON lines; library code only sees
plain callbacks.

``set_log_format("json")`` (the CLI's ``attriblm --log-json ...``) switches every bar to JSON
lines on stderr, one per stage at most once a second and at completion:
``{"event": "progress", "stage": ..., "done": n, "total": t, "rate_per_s": r, "elapsed_s": e}``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from attriblm.errors import ConfigError

stderr_console = Console(stderr=True)

StageProgress = Callable[[str, int], Callable[[int], None]]
LOG_FORMATS = ("text", "json")
_log_format = {"value": "text"}


def set_log_format(name: str) -> None:
    """``text`` (rich bars) or ``json`` (JSON lines on stderr) for every later stage."""
    if name not in LOG_FORMATS:
        raise ConfigError(f"unknown log format {name!r}; choose {', '.join(LOG_FORMATS)}")
    _log_format["value"] = name


class RateColumn(ProgressColumn):
    """Items per second of a bar (blank until rich has a speed estimate)."""

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:.2f}/s", style="progress.data.speed")


def _json_stage(description: str, total: int) -> Callable[[int], None]:
    state = {"done": 0, "start": time.perf_counter(), "last": 0.0}

    def advance(n: int) -> None:
        state["done"] += n
        now = time.perf_counter()
        if now - state["last"] < 1.0 and state["done"] < total:
            return
        state["last"] = now
        elapsed = now - state["start"]
        record = {
            "event": "progress",
            "stage": description,
            "done": state["done"],
            "total": total,
            "rate_per_s": state["done"] / elapsed if elapsed > 0 else None,
            "elapsed_s": elapsed,
        }
        print(json.dumps(record), file=sys.stderr, flush=True)

    return advance


@contextmanager
def stage_progress(enabled: bool = True) -> Iterator[StageProgress]:
    """Yield ``make(description, total)``; each call adds a bar and returns ``advance(n)``."""
    if not enabled:
        yield lambda _description, _total: lambda _n: None
        return
    if _log_format["value"] == "json":
        yield _json_stage
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=stderr_console) as progress:

        def make(description: str, total: int) -> Callable[[int], None]:
            task = progress.add_task(description, total=total)
            return lambda n: progress.advance(task, n)

        yield make


def step_callback(progress: StageProgress, description: str) -> Callable[[int, int, float], None]:
    """Adapt ``progress`` to a trainer's ``callback(step, total_steps, loss)``: one bar, lazily."""
    bar: dict[str, Callable[[int], None]] = {}

    def on_step(step: int, total: int, loss: float) -> None:
        if "advance" not in bar:
            bar["advance"] = progress(description, total)
        bar["advance"](1)

    return on_step
