"""benchmarks/performance.py runs end to end (tiny sizes) and its markdown section is generated."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from attriblm.io import read_json

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=600, check=False
    )


def _write_md(*args: str) -> None:
    """benchmarks/write_performance_md.py ARGS as its ``__main__``, in this process (it is plain
    Python over JSON files; a fresh interpreter would only add ~3.5 s of imports per call)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["write_performance_md.py", *args])
        runpy.run_path(str(BENCHMARKS / "write_performance_md.py"), run_name="__main__")


def test_performance_benchmark_and_its_markdown(tmp_path):
    out = tmp_path / "perf"
    result = _run(
        str(BENCHMARKS / "performance.py"), "--out", str(out), "--model", "tiny",
        "--max-length", "512", "--n-train", "12", "--n-query", "4", "--big-n-train", "20",
        "--big-n-query", "10", "--loop-rows", "4", "--batch-size", "4", "--proj-dims", "8",
        "--mem-rows", "600", "--mem-dim", "32", "--mem-shard", "200", "--repeats", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = read_json(out / "performance.json")
    g = report["gradients"]
    assert g["rows"] == 16 and g["loop_rows"] == 4 and g["big_shape"] == [10, 20]
    assert g["loop_max_rel_diff"] < 1e-4  # the batched rows are the loop's gradients
    assert g["projection"]["bf16-store"]["spearman"] > 0.99
    assert g["projection"]["fp16-store"]["spearman"] > 0.99
    assert g["floor_selected_s"] > 0 and g["loop_selected_s"] > 0
    assert set(g["scoring"]) == {"gradsim", "datainf", "lissa-paper", "exact"}
    memory = report["memory"]
    assert memory["score"]["gradsim"]["shape"] == [100, 600]
    assert 0 < memory["write"]["bf16"]["bytes"] < memory["write"]["fp32"]["bytes"]
    assert 0 < memory["write"]["fp16"]["bytes"] < memory["write"]["fp32"]["bytes"]
    assert not (out / "memory-store-fp32").exists()

    doc = tmp_path / "PERFORMANCE.md"
    doc.write_text("# Performance\n\nhand-written part\n")
    for _ in range(2):  # the second run replaces the generated section, it does not append
        _write_md("--perf", str(out), "--doc", str(doc))
    text = doc.read_text()
    assert text.startswith("# Performance\n\nhand-written part")
    assert text.count("## Feature pipeline against the hardware floor") == 1
    assert "per-example gradients" in text and "peak resident memory" in text
    assert "bf16 / fp16 storage" in text and "store on disk, fp16" in text

    # a GPU run gets its own section; rerunning the CPU one leaves it in place
    gpu = tmp_path / "gpu-perf"
    gpu.mkdir()
    report["machine"] = {**report["machine"], "device": "cuda:0", "gpu": "Some GPU"}
    (gpu / "performance.json").write_text(json.dumps(report))
    for perf in (gpu, out):
        _write_md("--perf", str(perf), "--doc", str(doc))
    text = doc.read_text()
    assert text.count("## Feature pipeline against the hardware floor (issue 6, CPU)") == 1
    assert text.count("## Feature pipeline against the hardware floor (issue 6, GPU)") == 1
    assert "≥ 10 × (GPU)" in text and "(Some GPU)" in text


def test_gpu_check_script_dry_run_on_cpu(tmp_path):
    """benchmarks/gpu_check.sh, meant for a GPU session, runs every step here at tiny sizes."""
    env = {**os.environ, "DEVICE": "cpu", "SMALL": "1", "NPROC": "2", "PYTHON": sys.executable}
    env["OMP_NUM_THREADS"] = "1"
    result = subprocess.run(
        ["bash", str(BENCHMARKS / "gpu_check.sh"), str(tmp_path / "gpu")],
        capture_output=True, text=True, timeout=900, check=False, env=env,
        cwd=BENCHMARKS.parent,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = read_json(tmp_path / "gpu" / "gpu_check.json")
    assert report["torchrun"]["world_size"] == 2
    assert set(report["torchrun_vs_fp32_rel_error"]) == {
        "gradsim", "datainf", "ekfac", "tracin", "repsim"
    }  # fmt: skip
    assert max(report["torchrun_vs_fp32_rel_error"].values()) < 1e-5
    assert min(report["bf16_vs_fp32_spearman"].values()) > 0.9
    assert report["model"]["device"] == "cpu" and report["performance"]["loop_rows"] == 8
    assert "## Feature pipeline" in (tmp_path / "gpu" / "PERFORMANCE.md").read_text()
    assert not (tmp_path / "gpu" / "model").exists()  # the big model never lands under OUT
