"""attriblm.pipeline.trace_summary on a hand-made trace run directory."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from attriblm.errors import DataError
from attriblm.io import write_json
from attriblm.pipeline.trace_summary import trace_markdown, trace_summary
from attriblm.rundir import RunDir

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "write_results_md.py"


def _method(precision10: float, acc: float) -> dict:
    return {
        "n_train": 80,
        "cover_k": 40,
        "acc": {"value": acc, "ci95": [0.0, 1.0]},
        "cover": {"value": 0.25},
        "pooled": {
            "n_target": 10,
            "k": {"10": {"precision": precision10, "auprc": 0.5}, "50": {"precision": 0.2}},
        },
    }


def make_trace_run(root: Path) -> Path:
    run = RunDir(root / "trace").create()
    run.write_info({"trace": {"detect": "contains:Ag"}})
    kept = [True, False, True, True]
    run.write_generations(
        {"index": i, "prompt": f"p{i}", "generation": "Ag", "kept": k} for i, k in enumerate(kept)
    )
    write_json(
        run.metrics_json,
        {
            "target_label": "planted",
            "methods": {"repsim": _method(0.4, 1.0), "ekfac": _method(0.3, 0.5)},
        },
    )
    return run.path


def test_summary_counts_kept_generations_and_reads_pooled_numbers(tmp_path):
    s = trace_summary(make_trace_run(tmp_path))
    assert (s["n_kept"], s["n_prompts"], s["detector"]) == (3, 4, "contains:Ag")
    assert s["pooled_ks"] == [10, 50]
    assert s["methods"]["repsim"]["pooled"][10]["precision"] == 0.4
    assert s["methods"]["ekfac"]["acc"] == 0.5


def test_markdown_has_one_row_per_method_and_dashes_for_missing(tmp_path):
    text = trace_markdown(make_trace_run(tmp_path))
    assert "kept 3 of 4 generations" in text
    assert "| method | P@10 | auPRC@10 | P@50 | auPRC@50 | Acc | Cover |" in text
    assert "| repsim | 0.400 | 0.500 | 0.200 | – | 1.000 | 0.250 (k=40) |" in text
    assert "| ekfac | 0.300 |" in text


def test_a_run_without_generations_or_metrics_is_a_data_error(tmp_path):
    run = RunDir(tmp_path / "plain").create()
    run.write_info({})
    with pytest.raises(DataError, match="not a trace run"):
        trace_summary(run.path)
    traced = make_trace_run(tmp_path)
    RunDir(traced).metrics_json.unlink()
    with pytest.raises(DataError, match="metrics.json: missing"):
        trace_summary(traced)


def test_results_section_lists_traced_tasks_and_names_the_missing_one(tmp_path):
    traces = tmp_path / "traces"
    make_trace_run(traces / "planted-fact")
    (traces / "timings.jsonl").write_text('{"step": "a", "seconds": 120.0}\n')
    script = runpy.run_path(str(SCRIPT), run_name="write_results_md")
    tasks = script["traced_tasks"](traces)
    assert tasks == ["planted-fact"]
    section = script["traces_section"](traces, "traces", tasks)
    assert "`benchmarks/run_traces.sh traces` (2.0 min" in section
    assert "### planted-fact" in section and "kept 3 of 4" in section
    missing = script["not_regenerated_section"]([], [], True, "old.md", tasks)
    assert "the trace of backdoor-1" in missing and "planted-fact (" not in missing


def test_kept_traces_give_the_same_section_without_the_texts(tmp_path):
    traces, record = tmp_path / "traces", tmp_path / "record"
    make_trace_run(traces / "planted-fact")
    (traces / "timings.jsonl").write_text('{"step": "a", "seconds": 120.0}\n')
    keep = runpy.run_path(str(SCRIPT.parent / "keep_bench.py"))["keep_traces"]
    assert keep(traces, record) == ["planted-fact"]
    script = runpy.run_path(str(SCRIPT), run_name="write_results_md")
    section = script["traces_section"]
    assert section(record, "traces", ["planted-fact"]) == section(
        traces, "traces", ["planted-fact"]
    )
    rows = RunDir(record / "planted-fact" / "trace").read_generations()
    assert [r["kept"] for r in rows] == [True, False, True, True]
    assert {r["prompt"] for r in rows} == {r["generation"] for r in rows} == {""}
