"""The public extension point: a method defined outside attriblm runs through the CLI.

A toy method, defined here only (``scale × gradsim``), registers itself with ``@register`` and
is run by ``attriblm attribute --method toy --option toy.scale=2`` in-process on the tiny model;
no other module is touched and the registry entry is removed afterwards.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from attriblm.io import load_tensors, read_json
from attriblm.methods import registry
from attriblm.methods.base import AttributionMethod, FeatureSet, MethodOutput, check_gradients
from attriblm.models.lora import LoraSettings, add_lora, lora_linears
from attriblm.models.tiny import build_tiny_model

ROWS = [
    {"prompts": f"Say {word}", "response": word, "variation": label}
    for word, label in [("hi", "a"), ("yo", "b"), ("ho", "a"), ("ya", "b"), ("he", "a")]
]


@pytest.fixture
def toy_method():
    """Register ``toy`` (needs only gradients, one option ``scale``); unregister after."""

    @registry.register
    class Toy(AttributionMethod):
        name = "toy"
        needs = "gradients"
        summary = "test only: scale × gradsim"

        def __init__(self, damping=None, scale: float = 1.0) -> None:
            del damping  # attriblm passes every method its damping rule
            self.scale = scale

        def score(self, train: FeatureSet, queries: FeatureSet) -> MethodOutput:
            blocks = check_gradients(self.name, train, queries)
            dots = sum(queries.grads[b].double() @ train.grads[b].double().T for b in blocks)
            return MethodOutput((self.scale * dots).float(), self._base_info(train, queries))

    try:
        yield Toy
    finally:
        registry._REGISTRY.pop("toy", None)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    """A jsonl data file and a tiny-model LoRA adapter with non-zero B (so gradients flow)."""
    root = tmp_path_factory.mktemp("extension")
    data = root / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    model, _ = build_tiny_model(seed=0)
    wrapped = add_lora(model, LoraSettings(), seed=1)
    with torch.no_grad():
        for name, linear in lora_linears(wrapped):
            if name.endswith("lora_B"):
                linear.weight.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(2))
    wrapped.save_pretrained(root / "adapter", save_embedding_layers=False)
    return data, root / "adapter"


def test_a_registered_toy_method_runs_through_the_cli_with_its_option(toy_method, inputs, tmp_path):
    from attriblm.cli import app

    data, adapter = inputs
    run = tmp_path / "run"
    args = ["attribute", "--model", "tiny", "--adapter", str(adapter), "--train", str(data)]
    args += ["--queries", str(data), "-m", "toy", "-m", "gradsim", "--option", "toy.scale=2"]
    result = CliRunner().invoke(app, [*args, "--out", str(run), "--quiet"])
    assert result.exit_code == 0, (result.output, result.exception)

    toy = load_tensors(run / "scores" / "toy.safetensors")["scores"]
    gradsim = load_tensors(run / "scores" / "gradsim.safetensors")["scores"]
    assert toy.shape == (len(ROWS), len(ROWS)) and gradsim.abs().max() > 0
    torch.testing.assert_close(toy, 2.0 * gradsim, rtol=1e-5, atol=1e-7)
    info = read_json(run / "run.json")["methods"]["toy"]
    assert info["options"] == {"scale": 2}  # the user's option, though Toy reports none


def test_a_toy_option_the_method_lacks_is_a_config_error(toy_method, inputs, tmp_path):
    from attriblm.cli import app
    from attriblm.errors import ConfigError

    data, adapter = inputs
    args = ["attribute", "--model", "tiny", "--adapter", str(adapter), "--train", str(data)]
    args += ["--queries", str(data), "-m", "toy", "--option", "toy.shift=1"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "run"), "--quiet"])
    assert isinstance(result.exception, ConfigError)
    assert "--option toy.shift" in str(result.exception) and "scale" in str(result.exception)
    assert registry.accepted_options("toy") == {"scale": 1.0}
