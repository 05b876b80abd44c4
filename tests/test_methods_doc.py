"""docs/METHODS.md lists the options each method accepts (generated from accepted_options)."""

from __future__ import annotations

import inspect
from pathlib import Path

from attriblm.cli_options import format_scalar
from attriblm.methods.registry import accepted_options, available_methods

DOC = Path(__file__).resolve().parents[1] / "docs" / "METHODS.md"


def _default(default: object) -> str:
    return "(required)" if default is inspect.Parameter.empty else format_scalar(default)


def option_rows() -> list[str]:
    """The rows of the doc's "Method options" table, one per registered method."""
    rows = []
    for name in available_methods():
        options = accepted_options(name).items()
        cells = ", ".join(f"`{key}={_default(default)}`" for key, default in options)
        rows.append(f"| `{name}` | {cells or 'none'} |")
    return rows


def test_the_doc_lists_every_methods_options():
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("\n## Method options\n") :]
    section = section[: section.find("\n## ", 1)]
    missing = [row for row in option_rows() if row not in section.splitlines()]
    assert missing == [], "update docs/METHODS.md ## Method options with:\n" + "\n".join(
        option_rows()
    )
