"""Progress bars (rich) for long stages; library code only sees plain callbacks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

stderr_console = Console(stderr=True)

StageProgress = Callable[[str, int], Callable[[int], None]]


@contextmanager
def stage_progress(enabled: bool = True) -> Iterator[StageProgress]:
    """Yield ``make(description, total)``; each call adds a bar and returns ``advance(n)``."""
    if not enabled:
        yield lambda _description, _total: lambda _n: None
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
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
