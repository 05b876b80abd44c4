"""A small tiny-model fine-tune (2 epochs, per-epoch checkpoints) shared by the analysis tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from attriblm.data.loaders import load_examples
from attriblm.data.schema import Example
from attriblm.models.loading import LoadedModel, load_model
from attriblm.train.finetune import TrainSettings, finetune


@dataclass
class TinyFinetune:
    """The fine-tune directory, the fine-tuned model, and the example subsets (and files)."""

    out_dir: Path
    loaded: LoadedModel
    train: list[Example]
    queries: list[Example]
    train_file: Path
    queries_file: Path


def _write(path: Path, examples: list[Example]) -> Path:
    rows = [{"prompts": e.prompt, "response": e.response, "variation": e.label} for e in examples]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_finetune(tmp_path_factory, samples_dir) -> TinyFinetune:
    """Tiny model fine-tuned for 2 epochs on 20 grammars rows (2 per class); 10 queries."""
    root = tmp_path_factory.mktemp("analysis-ft")
    train = load_examples(str(samples_dir / "grammars_small_train.jsonl"))[::4]
    queries = load_examples(str(samples_dir / "grammars_small_test.jsonl"))[::2]
    loaded = load_model("tiny")
    settings = TrainSettings(epochs=2, lr=2e-3, batch_size=10)
    result = finetune(loaded, train, settings, root / "ft")
    return TinyFinetune(
        out_dir=result.out_dir,
        loaded=loaded,
        train=train,
        queries=queries,
        train_file=_write(root / "train.jsonl", train),
        queries_file=_write(root / "queries.jsonl", queries),
    )
