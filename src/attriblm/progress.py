"""Progress for long stages: rich bars, plain lines or JSON lines; library code only sees plain
callbacks.

- On a terminal, rich bars (counts, rates, elapsed and remaining time).
- When stderr is not a terminal (a log file, a pipe, CI), plain lines instead, never cut to a
  width: ``fine-tuning: 12/40 (30%) 1.93/s elapsed 6.2s``, one per stage at most every
  ``PLAIN_INTERVAL_S`` seconds, plus one at completion.
- ``set_log_format("json")`` (the CLI's ``attriblm --log-json ...``) switches every stage to JSON
  lines on stderr, at most once a second and at completion:
  ``{"event": "progress", "stage": ..., "done": n, "total": t, "rate_per_s": r, "elapsed_s": e}``.

``stage_progress(False)`` (the CLI's ``--quiet``) shows no progress; warnings (truncated rows,
unconverged solves) still print, since they change how results read.
:func:`one_line_warnings` makes every warning one line on stderr with its category and no
source-line echo.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
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


def _ignore(_n: int) -> None:
    """An ``advance(n)`` that shows nothing."""


def no_progress(_description: str, _total: int) -> Callable[[int], None]:
    """The silent :data:`StageProgress`: every stage's ``advance(n)`` does nothing.

    The default ``progress`` of library functions (and what ``stage_progress(False)`` yields).
    """
    return _ignore


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


PLAIN_INTERVAL_S = 10.0


def _json_line(description: str, done: int, total: int, elapsed: float) -> str:
    record = {
        "event": "progress",
        "stage": description,
        "done": done,
        "total": total,
        "rate_per_s": done / elapsed if elapsed > 0 else None,
        "elapsed_s": elapsed,
    }
    return json.dumps(record)


def _plain_line(description: str, done: int, total: int, elapsed: float) -> str:
    share = f" ({100 * done / total:.0f}%)" if total > 0 else ""
    rate = f" {done / elapsed:.2f}/s" if elapsed > 0 else ""
    return f"{description}: {done}/{total}{share}{rate} elapsed {elapsed:.1f}s"


def _line_stage(render: Callable[[str, int, int, float], str], interval_s: float) -> StageProgress:
    """A stage maker that prints ``render(...)`` on stderr every ``interval_s`` and at the end."""

    def make(description: str, total: int) -> Callable[[int], None]:
        start = time.perf_counter()
        state = {"done": 0, "start": start, "last": start}  # first line after one interval

        def advance(n: int) -> None:
            state["done"] += n
            now = time.perf_counter()
            if now - state["last"] < interval_s and state["done"] < total:
                return
            state["last"] = now
            line = render(description, state["done"], total, now - state["start"])
            print(line, file=sys.stderr, flush=True)

        return advance

    return make


def _format_warning(message, category, filename, lineno, line=None) -> str:
    text = " ".join(str(message).split())
    return f"attriblm: {category.__name__}: {text}\n"


def one_line_warnings() -> None:
    """Show every later warning as one line, ``attriblm: <Category>: <message>``, no source echo."""
    warnings.formatwarning = _format_warning


@contextmanager
def stage_progress(enabled: bool = True) -> Iterator[StageProgress]:
    """Yield ``make(description, total)``; each call adds a bar and returns ``advance(n)``.

    Disabled (``--quiet``): no progress is shown (warnings are left alone).
    """
    if not enabled:
        yield no_progress
        return
    if _log_format["value"] == "json":
        yield _line_stage(_json_line, 1.0)
        return
    if not stderr_console.is_terminal:
        yield _line_stage(_plain_line, PLAIN_INTERVAL_S)
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
