from __future__ import annotations

import base64
import json
import re
import shutil

import pytest

from attriblm.errors import AttriblmError
from attriblm.io import load_tensors
from attriblm.metrics.ranking import rank_train
from attriblm.report.html import build_report, detect_kind, render_report


def _jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _assert_self_contained(text: str, doc) -> None:
    assert "<script" not in text.lower()
    for node in doc.iter():
        for attr in ("src", "href"):
            value = node.attrs.get(attr)
            if value is not None:
                assert value.startswith(("data:", "#")), (node.tag, value[:80])
    tag_with_url = r"<[^>]*\b(src|href)\s*=\s*[\"']?https?://"
    assert not re.search(tag_with_url, text, re.IGNORECASE)
    assert not doc.find("link")


@pytest.fixture(scope="module")
def run_page(report_run, tmp_path_factory, parse_html):
    out = tmp_path_factory.mktemp("page") / "report.html"
    written = render_report(report_run, out)
    text = written.read_text(encoding="utf-8")
    return text, parse_html(text)


def test_run_report_has_metrics_config_and_agreement(run_page, report_run, run_methods):
    text, doc = run_page
    assert text.startswith("<!DOCTYPE html>")
    table = doc.find("table", id="metrics")
    assert table is not None
    header = [th.text() for th in table.find("thead").find_all("th")]
    assert header == ["method", "Acc", "Cover", "AUPRC", "AUROC", "seconds"]
    assert [tr.attrs["data-method"] for tr in table.find("tbody").find_all("tr")] == run_methods
    # No metrics.json in this run: computed in memory and said so, nothing written.
    assert "not saved" in doc.find("p", cls="metrics-note").text()
    assert not (report_run / "metrics.json").exists()
    assert "loss_mask: response" in doc.find("pre", id="config").text()
    agreement = doc.find("table", id="agreement")
    rows = list(agreement.find("tbody").find_all("tr"))
    assert [r.attrs["data-method"] for r in rows] == run_methods
    for i, row in enumerate(rows):
        assert [td.text() for td in row.find_all("td")][1 + i] == "1.00"
    _assert_self_contained(text, doc)


def test_each_query_lists_topk_per_method_with_correct_marks(run_page, report_run, run_methods):
    _, doc = run_page
    train = _jsonl(report_run / "data" / "train.jsonl")
    queries = _jsonl(report_run / "data" / "queries.jsonl")
    scores = {
        m: load_tensors(report_run / "scores" / f"{m}.safetensors")["scores"] for m in run_methods
    }
    details = list(doc.find("section", id="queries").find_all("details", cls="query"))
    assert len(details) == len(queries) == 20
    assert "open" in details[0].attrs and "open" not in details[1].attrs
    seen = {"correct": 0, "incorrect": 0}
    for q, block in enumerate(details):
        assert block.attrs["id"] == f"query-{q + 1}"
        assert block.attrs["data-label"] == queries[q]["label"]
        assert queries[q]["prompt"] in block.text()
        lists = {ol.attrs["data-method"]: ol for ol in block.find_all("ol", cls="topk")}
        assert list(lists) == run_methods
        for method, ol in lists.items():
            hits = list(ol.find_all("li", cls="hit"))
            assert [int(h.attrs["data-rank"]) for h in hits] == [1, 2, 3, 4, 5]
            indices = [int(h.attrs["data-index"]) for h in hits]
            expected = rank_train(scores[method][q][None], queries=[q])[0, :5].tolist()
            assert indices == expected
            for hit, index in zip(hits, indices, strict=True):
                assert train[index]["prompt"] in hit.text()
                assert hit.attrs["data-label"] == train[index]["label"]
                mark = "correct" if train[index]["label"] == queries[q]["label"] else "incorrect"
                assert mark in hit.classes
                assert ("✓ correct" if mark == "correct" else "✗ incorrect") in hit.text()
                seen[mark] += 1
        assert block.find("table", cls="query-agreement") is not None
    assert seen["correct"] > 0 and seen["incorrect"] > 0


def test_k_and_max_queries_limit_the_page(report_run, parse_html):
    doc = parse_html(build_report(report_run, k=2, max_queries=3))
    details = list(doc.find_all("details", cls="query"))
    assert len(details) == 3
    for ol in doc.find_all("ol", cls="topk"):
        assert len(list(ol.find_all("li", cls="hit"))) == 2
    assert "first 3 of 20 queries" in doc.find("section", id="queries").text()


def test_metrics_json_and_plots_are_embedded(evaluated_run, parse_html):
    text = build_report(evaluated_run)
    doc = parse_html(text)
    assert doc.find("table", id="metrics") is not None
    assert doc.find("p", cls="metrics-note") is None  # read from metrics.json
    images = list(doc.find_all("img"))
    assert len(images) == 1
    src = images[0].attrs["src"]
    assert src.startswith("data:image/png;base64,")
    assert base64.b64decode(src.split(",", 1)[1]) == (evaluated_run / "loss.png").read_bytes()
    _assert_self_contained(text, doc)


def test_user_text_is_escaped(report_run, tmp_path, parse_html):
    run = tmp_path / "run"
    shutil.copytree(report_run, run)
    train_file = run / "data" / "train.jsonl"
    rows = _jsonl(train_file)
    evil = '<script>alert("x")</script> & <img src=https://example.com/a.png>'
    rows = [{**r, "prompt": r["prompt"] + evil} for r in rows]
    train_file.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    text = build_report(run)
    doc = parse_html(text)
    _assert_self_contained(text, doc)
    assert not list(doc.find_all("img"))
    assert evil in doc.find("li", cls="hit").text()
    assert "&lt;script&gt;" in text


def test_bench_report_finds_moved_runs(bench_dir, parse_html, run_methods):
    assert detect_kind(bench_dir) == "bench"
    text = build_report(bench_dir, k=3, max_queries=4)
    doc = parse_html(text)
    results = doc.find("table", id="results")
    assert len(list(results.find("tbody").find_all("tr"))) == len(run_methods)
    section = doc.find("section", cls="bench-run")
    assert section.attrs["data-task"] == "grammars"
    assert section.attrs["data-loss-mask"] == "response"
    assert section.find("table", id="grammars-response-metrics") is not None
    assert len(list(section.find_all("details", cls="query"))) == 4
    assert section.find("details", id="grammars-response-query-1") is not None
    assert len(list(section.find_all("ol", cls="topk"))) == 4 * len(run_methods)
    plots = [img.attrs["src"] for img in doc.find("section", id="plots").find_all("img")]
    assert len(plots) == 1 and plots[0].startswith("data:image/png;base64,")
    ids = [n.attrs["id"] for n in doc.iter() if "id" in n.attrs]
    assert len(ids) == len(set(ids))
    _assert_self_contained(text, doc)


def test_analyze_report_shows_json_and_plots(analyze_dir, parse_html):
    assert detect_kind(analyze_dir) == "analyze"
    text = build_report(analyze_dir)
    doc = parse_html(text)
    pre = doc.find("pre", cls="json", data_file="summary.json")
    assert json.loads(pre.text()) == {"theorem1": {"n": [128, 512], "error": [0.1, 0.05]}}
    assert doc.find("img").attrs["src"].startswith("data:image/png;base64,")
    _assert_self_contained(text, doc)


def test_not_a_report_directory_is_a_one_line_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(AttriblmError, match="not an attriblm run, bench or analyze") as info:
        render_report(tmp_path, tmp_path / "r.html")
    assert "\n" not in str(info.value) and str(tmp_path) in str(info.value)
    with pytest.raises(AttriblmError, match="no such directory"):
        render_report(tmp_path / "missing", tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_bad_k_and_broken_run_files_are_errors(report_run, tmp_path):
    with pytest.raises(AttriblmError, match="--k 0"):
        build_report(report_run, k=0)
    run = tmp_path / "run"
    shutil.copytree(report_run, run)
    (run / "data" / "queries.jsonl").write_text('{"prompt": "a"}\n{oops\n')
    with pytest.raises(AttriblmError, match=r"queries\.jsonl: row 2"):
        build_report(run)
