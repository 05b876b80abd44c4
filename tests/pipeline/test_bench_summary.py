from __future__ import annotations

import numpy as np
import pytest

from attriblm.errors import AttriblmError
from attriblm.io import read_json
from attriblm.pipeline import claims
from attriblm.pipeline.bench_summary import (
    bench_markdown,
    compute_seconds,
    findings,
    mean_rank_agreement,
    per_query_table,
    read_results,
)


def test_compute_seconds_sums_every_task_and_mask(bench_dir):
    seconds = compute_seconds(bench_dir)
    assert len(seconds["per_run"]) == 4  # 2 tasks × 2 loss masks
    assert all(r["finetune"] > 0 and r["attribute"] > 0 for r in seconds["per_run"])
    total = sum(r["finetune"] + r["attribute"] for r in seconds["per_run"])
    assert seconds["total"] == pytest.approx(total)


def test_findings_are_computed_from_the_score_files(bench_dir):
    items = {(i["finding"], i["loss_mask"]): i for i in findings(bench_dir, n_boot=200)}
    lissa = items[("lissa_paper_like_gradsim", "response")]["numbers"]
    assert set(lissa["spearman_per_task"]) == {"grammars", "harmful-s"}
    assert -1.0 <= lissa["mean_spearman"] <= 1.0
    # no math task in this grid: that finding is not measured
    assert items[("math_easy", "paper")]["verdict"] == "not measured"
    ahead = items[("repsim_ahead", "paper")]
    rows = read_results(bench_dir)
    harmful = {
        r["method"]: r for r in rows if r["task"] == "harmful-s" and r["loss_mask"] == "paper"
    }
    assert ahead["numbers"]["tasks"] == ["harmful-s"]
    for metric in ("cover", "auprc", "acc"):
        entry = ahead["numbers"]["metrics"][metric]
        assert entry["repsim"] == pytest.approx(harmful["repsim"][metric])
        assert entry["influence"]["exact"] == pytest.approx(harmful["exact"][metric])
        best = max(entry["influence"].values())
        assert entry["value"] == pytest.approx(harmful["repsim"][metric] - best)
        lo, hi = entry["ci95"]
        assert lo <= entry["value"] <= hi
    assert ahead["verdict"] == claims.overall(ahead["numbers"]["metrics"])
    exact = items[("exact_not_better", "response")]
    cover = exact["numbers"]["metrics"]["cover"]
    response = [r for r in rows if r["loss_mask"] == "response"]
    for method in ("exact", "gradsim"):
        expected = np.mean([r["cover"] for r in response if r["method"] == method])
        assert cover[method] == pytest.approx(expected)
    assert exact["verdict"] in ("agrees", "does not agree", "inconclusive")


def test_per_query_values_reproduce_results_csv(bench_dir):
    table = per_query_table(bench_dir)
    rows = read_results(bench_dir)
    assert set(table) == {(r["task"], r["loss_mask"], r["method"]) for r in rows}
    for row in rows:
        values = table[(row["task"], row["loss_mask"], row["method"])]
        for metric in ("acc", "cover", "auprc"):
            if row[metric] is None:
                assert np.isnan(values[metric]).all()
            else:
                assert np.nanmean(values[metric]) == pytest.approx(row[metric]), metric


def test_mean_rank_agreement():
    a = np.array([[1.0, 2.0, 3.0], [3.0, 1.0, 2.0]])
    assert mean_rank_agreement(a, a) == pytest.approx(1.0)
    assert mean_rank_agreement(a, -a) == pytest.approx(-1.0)


def test_bench_markdown_has_command_time_table_and_findings(bench_dir):
    text = bench_markdown(bench_dir, "bench-out", image="img/results.png")
    grid = read_json(bench_dir / "bench.json")["grid"]
    assert f"attriblm bench --preset {grid['preset']} --model tiny" in text
    assert "--out bench-out" in text
    # not all tasks and methods: the command names them, as given to bench
    assert "--tasks grammars,harmful-s --methods gradsim,repsim,lissa-paper,exact" in text
    assert "### loss mask: response" in text and "![results](img/results.png)" in text
    assert "Paper-style LiSSA ranks like gradient similarity" in text
    assert (
        "RepSim far ahead of influence functions" in text and "Criterion: difference ≥ 0.2" in text
    )
    assert "Acc (beside, not used for the verdict)" in text
    assert "Compute time recorded by the runs" in text
    assert "Invocation 1:" in text and "computing 4 fine-tunes and 4 attribution runs" in text


def test_missing_results_is_a_clear_error(tmp_path):
    with pytest.raises(AttriblmError, match="results.csv"):
        read_results(tmp_path)


def test_results_doc_script_writes_the_document(bench_dir, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "write_results_md.py"
    out = tmp_path / "docs" / "RESULTS.md"
    result = subprocess.run(
        [sys.executable, str(script), "--bench", str(bench_dir), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert text.startswith("# Results") and "learning rate" in text
    assert (tmp_path / "docs" / "img" / "bench-quick.png").stat().st_size > 10_000
    assert "### The study's findings, checked on this run" in text


def test_run_keys_ignore_store_location_and_neutral_storage_defaults():
    from dataclasses import asdict

    from attriblm.pipeline.attribute import AttributeSettings
    from attriblm.pipeline.bench import run_key_settings

    plain = AttributeSettings(methods=["gradsim"])
    key = run_key_settings(plain)
    # the keys of the settings that existed before the feature store: caches stay valid
    assert set(key) == set(asdict(plain)) - {
        "store", "keep_store", "store_dtype", "proj_dim", "proj_kind", "proj_seed", "options"
    }  # fmt: skip
    moved = AttributeSettings(methods=["gradsim"], store="/x", keep_store=True)
    assert run_key_settings(moved) == key
    assert run_key_settings(AttributeSettings(methods=["gradsim"], store_dtype="bf16")) != key
    assert run_key_settings(AttributeSettings(methods=["gradsim"], proj_dim=64)) != key
    lissa = AttributeSettings(methods=["lissa"], options={"lissa": {"max_iter": 10}})
    assert "options" in run_key_settings(lissa)
