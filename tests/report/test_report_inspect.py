from __future__ import annotations

import io
import json
import shutil

import pytest
from rich.console import Console

from attriblm.errors import AttriblmError
from attriblm.report.inspect import inspect_query


def _rows(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _text(view, width: int = 160) -> str:
    console = Console(record=True, width=width, file=io.StringIO())
    console.print(view)
    return console.export_text()


def test_inspect_returns_topk_per_method_with_marks(report_run, run_methods):
    queries = _rows(report_run / "data" / "queries.jsonl")
    train = _rows(report_run / "data" / "train.jsonl")
    view = inspect_query(report_run, 4, k=6)
    assert view.query == queries[4] and view.k == 6
    assert list(view.hits) == run_methods
    for hits in view.hits.values():
        assert [h.rank for h in hits] == [1, 2, 3, 4, 5, 6]
        assert all(a.score >= b.score for a, b in zip(hits, hits[1:], strict=False))
        for h in hits:
            assert h.label == train[h.index]["label"]
            assert h.correct == (train[h.index]["label"] == queries[4]["label"])
    assert all(view.agreement[m][m] == 1.0 for m in run_methods)


def test_inspect_renders_query_ranks_and_marks(report_run):
    queries = _rows(report_run / "data" / "queries.jsonl")
    view = inspect_query(report_run, 0, method="datainf", k=4)
    assert list(view.hits) == ["datainf"]
    text = _text(view)
    assert queries[0]["prompt"] in text
    assert "query row 1" in text and "datainf" in text
    hits = view.hits["datainf"]
    lines = [line for line in text.splitlines() if "correct" in line and "│" in line]
    assert len(lines) == len(hits) == 4
    for line, hit in zip(lines, hits, strict=True):
        cells = [c.strip() for c in line.split("│") if c.strip()]
        assert cells[0] == str(hit.rank) and cells[1] == str(hit.index + 1)
        assert cells[3] == ("✓ correct" if hit.correct else "✗ incorrect")


def test_inspect_falls_back_to_topk_jsonl(report_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(report_run, run)
    shutil.rmtree(run / "scores")
    from_file = inspect_query(run, 2, k=5)
    from_scores = inspect_query(report_run, 2, k=5)
    for method, hits in from_scores.hits.items():
        assert [h.index for h in from_file.hits[method]] == [h.index for h in hits]


@pytest.mark.parametrize("index", [-1, 20, 99])
def test_query_out_of_range_is_a_one_line_error(report_run, index):
    with pytest.raises(AttriblmError, match=r"queries\.jsonl: no query at index") as info:
        inspect_query(report_run, index)
    assert "rows 1–20" in str(info.value) and "\n" not in str(info.value)


def test_unknown_method_and_bad_run_are_errors(report_run, tmp_path):
    with pytest.raises(AttriblmError, match="no method 'lissa'.*gradsim"):
        inspect_query(report_run, 0, method="lissa")
    with pytest.raises(AttriblmError, match="not an attriblm run directory"):
        inspect_query(tmp_path, 0)
