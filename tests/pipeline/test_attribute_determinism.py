"""Same seed, same inputs → bit-identical score files on CPU (issue 8)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from attriblm.data.loaders import load_examples
from attriblm.io import load_tensors
from attriblm.models.loading import load_model
from attriblm.pipeline.attribute import AttributeSettings, attribute

METHODS = ["gradsim", "datainf", "lissa-paper", "exact", "repsim"]


@pytest.fixture(scope="module")
def two_runs(samples_dir, tiny_adapter, tmp_path_factory) -> tuple[Path, Path]:
    """The same attribution run twice, each with a freshly loaded model, into two dirs."""
    train = load_examples(f"{samples_dir / 'grammars_small'}:train")[::4]
    queries = load_examples(f"{samples_dir / 'grammars_small'}:test")[::2]
    root = tmp_path_factory.mktemp("determinism")
    for name in ("a", "b"):
        loaded = load_model("tiny", adapter=tiny_adapter, device="cpu")
        attribute(loaded, train, queries, AttributeSettings(methods=METHODS), root / name)
    return root / "a", root / "b"


@pytest.mark.parametrize("method", METHODS)
def test_score_files_are_bit_identical(two_runs, method):
    a, b = (run / "scores" / f"{method}.safetensors" for run in two_runs)
    first, second = load_tensors(a)["scores"], load_tensors(b)["scores"]
    assert first.shape == (10, 20) and torch.isfinite(first).all()
    assert torch.equal(first, second)
    assert a.read_bytes() == b.read_bytes()  # safetensors headers carry no timestamps


def test_topk_files_are_identical(two_runs):
    a, b = two_runs
    assert (a / "topk.jsonl").read_bytes() == (b / "topk.jsonl").read_bytes()
