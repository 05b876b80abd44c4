from __future__ import annotations

import pytest
import torch

from attriblm.errors import ConfigError
from attriblm.io import read_json, save_tensors, write_json, write_jsonl
from attriblm.metrics.pooled import pooled_topk
from attriblm.pipeline.evaluate import evaluate_run


@pytest.fixture
def run_dir(tmp_path):
    """A hand-made run directory: 3 queries labelled 't', 12 train rows, one method."""
    train = ["t" if i % 4 == 0 else "c" for i in range(12)]
    write_jsonl(tmp_path / "data" / "train.jsonl", [{"label": x} for x in train])
    write_jsonl(tmp_path / "data" / "queries.jsonl", [{"label": "t"}] * 3)
    scores = torch.randn(3, 12, generator=torch.Generator().manual_seed(0))
    save_tensors(tmp_path / "scores" / "rept.safetensors", {"scores": scores})
    write_json(tmp_path / "run.json", {"methods": {"rept": {"seconds": 0.5}}})
    return tmp_path, scores, train


def test_target_label_adds_the_pooled_metrics(run_dir):
    path, scores, train = run_dir
    report = evaluate_run(path, target_label="t", n_boot=10)
    pooled = report["methods"]["rept"]["pooled"]
    assert pooled == pooled_topk(scores, train, "t")
    assert list(pooled["k"]) == ["10", "12"]
    assert read_json(path / "metrics.json")["target_label"] == "t"
    assert "pooled" not in evaluate_run(path, n_boot=10)["methods"]["rept"]


def test_unknown_target_label_writes_nothing(run_dir):
    path, _, _ = run_dir
    with pytest.raises(ConfigError, match="--target-label"):
        evaluate_run(path, target_label="harmful", n_boot=10)
    assert not (path / "metrics.json").exists()
