"""A trace run's generations in the HTML report and in ``inspect`` (issue 19)."""

from __future__ import annotations

import io
import json
import shutil

import pytest
from rich.console import Console

from attriblm.errors import DataError
from attriblm.report.html import build_report
from attriblm.report.inspect import inspect_query
from attriblm.report.rundata import load_run


def _rows(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


@pytest.fixture(scope="module")
def trace_page(trace_run, parse_html):
    text = build_report(trace_run, k=3)
    return text, parse_html(text)


def test_the_trace_run_keeps_some_prompts_and_drops_others(trace_run):
    kept = [r["kept"] for r in _rows(trace_run / "generations.jsonl")]
    assert kept[0] and not all(kept), kept  # the fixture's detector is meant to split them


def test_report_has_one_generation_per_prompt_with_its_verdict(trace_page, trace_run):
    _, doc = trace_page
    rows = _rows(trace_run / "generations.jsonl")
    section = doc.find("section", id="generations")
    assert section is not None and section.find("h2").text() == "Generations"
    items = list(section.find_all("details", cls="generation"))
    assert [d.attrs["id"] for d in items] == [f"generation-{i + 1}" for i in range(len(rows))]
    detect = json.loads((trace_run / "run.json").read_text())["trace"]["detect"]
    for item, row in zip(items, rows, strict=True):
        assert item.find(cls="prompt").text() == row["prompt"]
        assert item.find(cls="answer").text() == row["generation"]
        assert item.attrs["data-kept"] == str(row["kept"]).lower()
        verdict = item.find("div", cls="example").find(cls="verdict").text()
        assert f"--detect {detect}" in verdict
        assert verdict.startswith("✓ kept") if row["kept"] else verdict.startswith("– not kept")


def test_kept_generations_list_the_runs_topk_per_method(trace_page, trace_run, trace_methods):
    _, doc = trace_page
    rows = _rows(trace_run / "generations.jsonl")
    stored = {(t["method"], t["query"]): t["top"] for t in _rows(trace_run / "topk.jsonl")}
    section = doc.find("section", id="generations")
    for row in rows:
        item = section.find("details", id=f"generation-{row['index'] + 1}")
        lists = list(item.find_all("ol", cls="topk"))
        if not row["kept"]:
            assert lists == [] and "data-query" not in item.attrs
            continue
        assert item.attrs["data-query"] == str(row["query"])
        assert [ol.attrs["data-method"] for ol in lists] == trace_methods
        for ol in lists:
            shown = [int(li.attrs["data-index"]) for li in ol.find_all("li", cls="hit")]
            top = stored[(ol.attrs["data-method"], row["query"])]
            assert shown == [t["index"] for t in top[:3]]


def test_summary_counts_the_traced_prompts(trace_page, trace_run):
    _, doc = trace_page
    rows = _rows(trace_run / "generations.jsonl")
    summary = {
        tr.find("th").text(): tr.find("td").text()
        for tr in doc.find("table", cls="summary").find_all("tr")
    }
    n_kept = sum(r["kept"] for r in rows)
    assert summary["traced prompts"] == f"{len(rows)} ({n_kept} kept)"
    assert summary["detector"].startswith("--detect contains:")


def test_a_plain_run_has_no_generations_section(report_run, parse_html):
    doc = parse_html(build_report(report_run, k=2, max_queries=1))
    assert doc.find("section", id="generations") is None
    assert load_run(report_run).generations is None


def test_inspect_shows_which_prompt_a_query_answered_and_the_verdict(trace_run):
    rows = _rows(trace_run / "generations.jsonl")
    last = [r for r in rows if r["kept"]][-1]
    view = inspect_query(trace_run, last["query"], k=2)
    assert view.generation == last and view.n_prompts == len(rows)
    console = Console(record=True, width=200, file=io.StringIO())
    console.print(view)
    text = console.export_text()
    assert f"generation for prompt {last['index'] + 1} of {len(rows)}" in text
    assert "✓ kept by the detector --detect contains:" in text
    assert " ".join(last["generation"].split())[:3] in " ".join(text.split())


def test_inspect_command_prints_the_verdict(trace_run, attriblm_cli):
    result = attriblm_cli("inspect", str(trace_run), "--query", "1", "--k", "2")
    assert result.returncode == 0, result.stderr
    flat = " ".join(result.stdout.split())
    assert "generation for prompt 1 of 6" in flat and "kept by the detector" in flat


def test_generations_that_disagree_with_the_queries_are_named(trace_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trace_run, run)
    rows = _rows(run / "generations.jsonl")
    rows[0]["query"] = 7
    (run / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(
        DataError, match=r"generations\.jsonl: row 1: kept generation has 'query' 7"
    ):
        load_run(run)
    rows[0]["query"] = 0
    rows.append({"index": 6, "prompt": "p", "generation": "g", "kept": True, "query": 99})
    (run / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match="row 7: kept generation has 'query' 99"):
        load_run(run)
