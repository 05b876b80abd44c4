"""docs/RELIABILITY.md must only cite tests that exist (so the table cannot drift)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "RELIABILITY.md"
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def _test_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test")
    }


def test_every_cited_test_exists():
    references = REFERENCE.findall(DOC.read_text(encoding="utf-8"))
    assert len(references) >= 30
    missing = [
        f"{file}::{name}"
        for file, name in references
        if not (ROOT / file).is_file() or name not in _test_functions(ROOT / file)
    ]
    assert missing == []


def _section(title: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_every_table_row_names_a_test_or_is_marked_pending():
    rows = [
        line
        for line in _section("Failure modes").splitlines()
        if line.startswith("| ") and not line.startswith("| failure mode")
    ]
    assert len(rows) >= 20
    for row in rows:
        assert REFERENCE.search(row) or "pending" in row, row
    assert any("SIGKILL" in row for row in rows)


def _cli_case_ids() -> list[str]:
    """The case ids of ``CASES`` in tests/test_cli_errors.py (first element of each tuple)."""
    tree = ast.parse((ROOT / "tests" / "test_cli_errors.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "CASES" for t in node.targets
        ):
            return [case.elts[0].value for case in node.value.elts]
    raise AssertionError("tests/test_cli_errors.py has no CASES")


def test_every_bad_input_the_cli_test_drives_is_listed():
    listed = set(re.findall(r"`([a-z0-9-]+)`", _section("What the command-line test drives")))
    ids = _cli_case_ids()
    assert len(ids) >= 40
    assert sorted(set(ids) - listed) == []
    assert sorted(i for i in listed if "-" in i and i not in ids and not i.startswith("--")) == []
