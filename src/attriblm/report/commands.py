"""``attriblm report`` and ``attriblm inspect`` (registered on the app in :mod:`attriblm.cli`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from attriblm.cli_options import ConfigOpt
from attriblm.errors import AttriblmError


def report(
    path: Annotated[
        Path,
        typer.Argument(
            metavar="RUN_OR_BENCH_DIR",
            help="An `attribute` run directory, a `bench` directory or an `analyze` directory.",
        ),
    ],
    out: Annotated[Path, typer.Option(help="HTML file to write.")] = Path("report.html"),
    k: Annotated[int, typer.Option(help="Training rows shown per query and method.")] = 5,
    max_queries: Annotated[
        int | None,
        typer.Option(help="Show only the first N queries per run (bench default: 20)."),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Write one self-contained HTML report (metrics, plots, each query's top-k per method)."""
    from rich.console import Console

    from attriblm.outputs import check_output_file
    from attriblm.report.html import render_report

    check_output_file(out)
    written = render_report(path, out, k=k, max_queries=max_queries)
    Console().print(f"wrote {written} ({written.stat().st_size / 1024:.0f} KiB)")


def inspect(
    run: Annotated[Path, typer.Argument(help="Run directory written by `attribute`.")],
    query: Annotated[
        int, typer.Option(help="Query row, 1-based (row 1 = first line of the query file).")
    ] = 1,
    method: Annotated[
        str | None, typer.Option(help="Show only this method (default: every method).")
    ] = None,
    k: Annotated[int, typer.Option(help="Training rows per method.")] = 10,
    config: ConfigOpt = None,
) -> None:
    """Show one query's top-k training rows per method in the terminal (✓ = same label)."""
    from rich.console import Console

    from attriblm.report.inspect import inspect_query
    from attriblm.report.rundata import load_run

    loaded = load_run(run, compute_metrics=False)
    if not 1 <= query <= loaded.n_query:
        raise AttriblmError(
            f"--query {query}: {run} has {loaded.n_query} queries; use 1 to {loaded.n_query}"
        )
    Console().print(inspect_query(loaded, query - 1, method=method, k=k))
