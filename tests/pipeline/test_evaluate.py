"""evaluate_run ranks with the tie seed the run recorded, so metrics agree with topk.jsonl."""

from __future__ import annotations

from pathlib import Path

import torch

from attriblm.io import read_json, save_tensors, write_json, write_jsonl
from attriblm.metrics.ranking import TIE_SEED, run_tie_seed, top1_accuracy
from attriblm.pipeline.evaluate import evaluate_run

TRAIN = ["target"] * 5 + ["other"] * 15
QUERIES = ["target"] * 40


def _run_dir(root: Path, ranking: dict | None) -> Path:
    run = root / "run"
    (run / "scores").mkdir(parents=True)
    info = {"methods": {"gradsim": {"seconds": 0.1}}}
    if ranking is not None:
        info["ranking"] = ranking
    write_json(run / "run.json", info)
    save_tensors(run / "scores" / "gradsim.safetensors", {"scores": torch.zeros(40, 20)})
    write_jsonl(run / "data" / "train.jsonl", [{"prompt": "p", "label": t} for t in TRAIN])
    write_jsonl(run / "data" / "queries.jsonl", [{"prompt": "q", "label": q} for q in QUERIES])
    return run


def test_evaluate_uses_the_runs_tie_seed(tmp_path):
    run = _run_dir(tmp_path, {"ties": "…", "tie_seed": 3})
    report = evaluate_run(run, n_boot=10)
    assert report["tie_seed"] == read_json(run / "metrics.json")["tie_seed"] == 3
    metrics = report["methods"]["gradsim"]
    assert metrics["ties"]["tie_seed"] == 3
    flat = torch.zeros(40, 20)
    assert metrics["acc"]["value"] == top1_accuracy(flat, QUERIES, TRAIN, tie_seed=3)
    assert metrics["acc"]["ties_at_k"] == 40
    assert metrics["acc"]["value"] < 0.6  # chance is 0.25; file order would give 1.0


def test_runs_without_a_recorded_seed_use_the_default(tmp_path):
    run = _run_dir(tmp_path, None)
    assert evaluate_run(run, n_boot=10)["tie_seed"] == TIE_SEED
    assert run_tie_seed({"ranking": {"tie_seed": True}}) == TIE_SEED
    assert run_tie_seed({"ranking": {"tie_seed": 9}}) == 9
