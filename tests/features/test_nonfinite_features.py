"""NaN / inf in a per-example gradient or representation: a ModelError naming the example."""

from __future__ import annotations

import pytest
import torch

from attriblm.data.schema import Example
from attriblm.data.tokenize import encode_examples, encode_prompts
from attriblm.errors import ModelError
from attriblm.features.gradients import per_example_gradients
from attriblm.features.representations import representations
from attriblm.models.loading import LoadedModel
from attriblm.models.lora import LoraSettings, add_lora, lora_linears
from attriblm.models.tiny import build_tiny_model
from attriblm.pipeline.attribute import AttributeSettings, attribute

EXAMPLES = [
    Example("Say hi.", "hi", "a"),
    Example("Spell cat backwards.", "tac", "b"),
    Example("Say hi.", "hello", "a"),
]
NAMES = [f"train.jsonl row {i}" for i in (1, 2, 3)]


def _poisoned(value: float) -> LoadedModel:
    """Tiny LoRA model whose embedding of a token only in example 2's prompt is ``value``."""
    model, tokenizer = build_tiny_model(seed=0)
    model = add_lora(model, LoraSettings(r=2, alpha=4), seed=1)
    with torch.no_grad():
        for name, linear in lora_linears(model):
            if name.endswith("lora_B"):
                linear.weight.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(2))
    prompts = encode_prompts(EXAMPLES, tokenizer)
    token = next(t for t in prompts[1] if t not in prompts[0] and t not in prompts[2])
    with torch.no_grad():
        model.get_input_embeddings().weight[token] = value
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, identity={"spec": "tiny"})


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_gradient_names_the_example_and_block(value):
    loaded = _poisoned(value)
    encoded = encode_examples(EXAMPLES, loaded.tokenizer)
    with pytest.raises(ModelError, match=r"non-finite gradient .* train.jsonl row 2 in block"):
        per_example_gradients(
            loaded.model, encoded, pad_token_id=loaded.tokenizer.pad_token_id, names=NAMES
        )


def test_non_finite_gradient_without_names_gives_a_one_based_index():
    loaded = _poisoned(float("nan"))
    encoded = encode_examples(EXAMPLES, loaded.tokenizer)
    with pytest.raises(ModelError, match="for example 2 in block"):
        per_example_gradients(loaded.model, encoded, pad_token_id=loaded.tokenizer.pad_token_id)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_representation_names_the_example(value):
    loaded = _poisoned(value)
    prompts = encode_prompts(EXAMPLES, loaded.tokenizer)
    with pytest.raises(ModelError, match=r"non-finite representation .* train.jsonl row 2"):
        representations(
            loaded.model, prompts, pad_token_id=loaded.tokenizer.pad_token_id, names=NAMES
        )


@pytest.mark.parametrize("method", ["gradsim", "repsim"])
def test_attribute_stops_with_the_row_and_writes_nothing(tmp_path, method):
    out = tmp_path / "run"
    with pytest.raises(ModelError, match=r"queries.jsonl row 2") as info:
        attribute(
            _poisoned(float("nan")),
            EXAMPLES[:1],
            EXAMPLES,
            AttributeSettings(methods=[method]),
            out,
            sources={"train": "train.jsonl", "queries": "queries.jsonl"},
        )
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []
