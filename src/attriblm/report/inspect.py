"""One query of a run in the terminal: its text, each method's top-k training rows, agreement.

:func:`inspect_query` returns a :class:`QueryView` holding the data and renderable with rich
(``Console().print(view)``). ``query_index`` is 0-based, the position in ``data/queries.jsonl``;
the command line's ``--query`` is 1-based (the "row N" of attriblm's messages). For a ``trace``
run (with ``generations.jsonl``) the query is a kept generation: the view also says which
prompt it answered and the detector's verdict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from attriblm.report.rundata import (
    Hit,
    RunData,
    check_k,
    check_method,
    check_query,
    load_run,
    overlap_matrix,
    top_hits,
)

TEXT_WIDTH = 160


@dataclass
class QueryView:
    """A query and its top-k training rows per method (rich-renderable)."""

    run_dir: Path
    query_index: int
    query: dict[str, Any]
    k: int
    hits: dict[str, list[Hit]]
    agreement: dict[str, dict[str, float]] = field(default_factory=dict)
    generation: dict[str, Any] | None = None  # its generations.jsonl row (trace runs)
    trace: dict[str, Any] = field(default_factory=dict)  # run.json["trace"]
    n_prompts: int | None = None  # generations.jsonl rows (trace runs)

    @property
    def renderable(self) -> RenderableType:
        """The rich renderable: a query panel, one table per method, the agreement table."""
        return render_query(self)

    def __rich__(self) -> RenderableType:
        return self.renderable


def _short(text: Any, width: int = TEXT_WIDTH) -> str:
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _mark(correct: bool | None) -> Text:
    if correct is None:
        return Text("? no label", style="dim")
    return Text("✓ correct", style="green") if correct else Text("✗ incorrect", style="red")


def _generation_line(view: QueryView) -> Text:
    """``trace    prompt N of M (generations.jsonl) · ✓ kept by the detector --detect SPEC``."""
    row = view.generation or {}
    number = int(row.get("index", 0)) + 1
    detect = view.trace.get("detect")
    rule = view.trace.get("detector_rule")
    line = Text("trace    ", style="bold")
    line.append(
        f"the response is the model's generation for prompt {number} of {view.n_prompts} "
        "(generations.jsonl) · "
    )
    kept = bool(row.get("kept"))
    verdict = "✓ kept by the detector" if kept else "– not kept by the detector"
    line.append(verdict, style="green" if kept else "dim")
    if detect:
        line.append(f" --detect {detect}" + (f" ({rule})" if rule else ""))
    return line


def render_query(view: QueryView) -> RenderableType:
    """Build the rich renderable of a :class:`QueryView`."""
    q = view.query
    body = Text()
    body.append("prompt   ", style="bold")
    body.append(str(q.get("prompt", "")) + "\n")
    body.append("response ", style="bold")
    body.append(str(q.get("response", "")) + "\n")
    body.append("label    ", style="bold")
    body.append(str(q.get("label")))
    if view.generation is not None:
        body.append("\n")
        body.append_text(_generation_line(view))
    parts: list[RenderableType] = [
        Panel(body, title=f"query row {view.query_index + 1} · {view.run_dir}", expand=False)
    ]
    for method, hits in view.hits.items():
        n_ok = sum(h.correct is True for h in hits)
        table = Table(
            title=f"{method} · top-{len(hits)} · {n_ok}/{len(hits)} with the query's label",
            caption="✓ correct: same label as the query · ✗ incorrect: a different label",
        )
        table.add_column("rank", justify="right")
        table.add_column("train row", justify="right")
        table.add_column("score", justify="right")
        table.add_column("", no_wrap=True)
        table.add_column("label / prompt → response", ratio=1)
        for h in hits:
            example = Text(str(h.label), style="bold")
            example.append("\n" + _short(h.prompt) + "\n→ " + _short(h.response), style="")
            table.add_row(
                str(h.rank), str(h.index + 1), f"{h.score:.4g}", _mark(h.correct), example
            )
        parts.append(table)
    if len(view.agreement) > 1:
        methods = list(view.agreement)
        table = Table(title=f"agreement: |A ∩ B| / {view.k} of the top-{view.k}")
        table.add_column("")
        for m in methods:
            table.add_column(m, justify="right")
        for a in methods:
            table.add_row(a, *(f"{view.agreement[a][b]:.2f}" for b in methods))
        parts.append(table)
    return Group(*parts)


def inspect_query(
    run_dir: Path | str | RunData, query_index: int, method: str | None = None, k: int = 10
) -> QueryView:
    """The top-``k`` training rows of one query under each method (or only ``method``).

    Args:
        run_dir: an ``attribute`` run directory (or a :class:`RunData` already loaded).
        query_index: 0-based position of the query in ``data/queries.jsonl``.
        method: one method of the run; ``None`` = every method.
        k: training rows per method (capped at the number of training rows).

    Raises:
        AttriblmError: not a run directory, query out of range, unknown method, ``k < 1``.
    """
    run = run_dir if isinstance(run_dir, RunData) else load_run(run_dir, compute_metrics=False)
    check_k(k)
    check_query(run, query_index)
    if method is not None:
        check_method(run, method)
    methods = [method] if method is not None else run.methods
    k_eff = min(k, run.n_train) if run.n_train else k
    hits = {m: top_hits(run, m, query_index, k_eff) for m in methods}
    return QueryView(
        run_dir=run.path,
        query_index=query_index,
        query=run.queries[query_index],
        k=k_eff,
        hits=hits,
        agreement=overlap_matrix(hits, k_eff),
        generation=run.generation_of(query_index),
        trace=run.trace,
        n_prompts=None if run.generations is None else len(run.generations),
    )
