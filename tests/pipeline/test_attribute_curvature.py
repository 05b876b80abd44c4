"""Pipeline checks for tracin (checkpoints), kfac / ekfac (factors saved and reused)."""

from __future__ import annotations

import pytest
import torch

from attriblm.data.loaders import load_examples
from attriblm.errors import ConfigError
from attriblm.features.checkpoints import adapter_weights
from attriblm.io import read_json
from attriblm.models.loading import load_model
from attriblm.models.lora import lora_linears
from attriblm.pipeline.attribute import AttributeSettings, attribute, resolve_checkpoints


@pytest.fixture(scope="module")
def small_data(samples_dir):
    spec = str(samples_dir / "grammars_small")
    return load_examples(f"{spec}:train")[::4], load_examples(f"{spec}:test")[::4]


@pytest.fixture(scope="module")
def curvature_run(tmp_path_factory, small_data, tiny_adapter):
    train, queries = small_data
    out = tmp_path_factory.mktemp("curv") / "run"
    settings = AttributeSettings(methods=["gradsim", "tracin", "kfac", "ekfac"])
    return attribute(load_model("tiny", adapter=tiny_adapter), train, queries, settings, out)


def test_tracin_uses_the_finetune_checkpoints(curvature_run, tiny_adapter):
    run = curvature_run
    log = read_json(tiny_adapter.parent / "train_log.json")
    lrs = [e["lr_sum"] for e in log["epochs"]]  # η_c: the summed rates of the epoch's steps
    assert lrs == pytest.approx([sum(s["lr"] for s in log["steps"])], rel=1e-12)
    assert [c["eta"] for c in run.info["checkpoints"]] == lrs
    assert run.info["methods"]["tracin"]["checkpoint_etas"] == lrs
    # one epoch: the only checkpoint is the final adapter, so tracin = η · gradsim
    assert len(lrs) == 1
    expected = lrs[0] * run.scores["gradsim"]
    assert torch.allclose(run.scores["tracin"], expected, rtol=1e-4, atol=1e-12)


def test_factors_are_saved_and_reused(curvature_run, small_data, tiny_adapter, tmp_path):
    run = curvature_run
    for name in ("kfac", "ekfac"):
        assert (run.out_dir / "factors" / f"{name}.safetensors").is_file()
        assert torch.isfinite(run.scores[name]).all()
        lambdas = run.info["methods"][name]["lambda"]
        assert lambdas and all(v > 0 for v in lambdas.values())
    train, queries = small_data
    settings = AttributeSettings(methods=["kfac", "ekfac"], factors=str(run.out_dir / "factors"))
    again = attribute(
        load_model("tiny", adapter=tiny_adapter), train, queries, settings, tmp_path / "r2"
    )
    assert "gradients:train" in again.info["timings_seconds"]
    for name in ("kfac", "ekfac"):
        assert torch.allclose(again.scores[name], run.scores[name], rtol=1e-5, atol=1e-7)


def test_checkpoint_weights_are_restored(tiny_adapter):
    loaded = load_model("tiny", adapter=tiny_adapter)
    linear = dict(lora_linears(loaded.model))
    name = next(n for n in linear if n.endswith("lora_B"))
    with torch.no_grad():
        linear[name].weight.add_(1.0)
    changed = linear[name].weight.detach().clone()
    ckpt = tiny_adapter.parent / "checkpoints" / "epoch-001"
    with adapter_weights(loaded.model, ckpt):
        assert not torch.equal(linear[name].weight, changed)
    assert torch.equal(linear[name].weight, changed)


def test_tracin_without_checkpoints_is_a_config_error(tiny_adapter, tmp_path):
    loaded = load_model("tiny", adapter=tiny_adapter)
    loaded.identity["adapter"] = str(tmp_path / "lonely-adapter")
    with pytest.raises(ConfigError, match="--checkpoints"):
        resolve_checkpoints(loaded, AttributeSettings(methods=["tracin"]))
    with pytest.raises(ConfigError, match="no fine-tune checkpoints"):
        resolve_checkpoints(loaded, AttributeSettings(checkpoints=str(tmp_path)))
    found = resolve_checkpoints(
        loaded, AttributeSettings(checkpoints=str(tiny_adapter.parent / "checkpoints"))
    )
    assert [c.epoch for c in found] == [1]


def test_last_checkpoint_reuses_the_main_gradients(tiny_adapter, small_data):
    from attriblm.data.tokenize import encode_examples
    from attriblm.features.checkpoints import checkpoint_gradients, matches_current_weights
    from attriblm.features.gradients import per_example_gradients

    loaded = load_model("tiny", adapter=tiny_adapter)
    ckpt = tiny_adapter.parent / "checkpoints" / "epoch-001"
    assert matches_current_weights(loaded.model, ckpt)
    encoded = encode_examples(small_data[0][:4], loaded.tokenizer)
    pad = loaded.tokenizer.pad_token_id
    current = per_example_gradients(loaded.model, encoded, pad_token_id=pad, batch_size=4)
    recomputed = checkpoint_gradients(loaded.model, [ckpt], encoded, pad_token_id=pad, batch_size=4)
    reused = checkpoint_gradients(
        loaded.model, [ckpt], encoded, pad_token_id=pad, batch_size=4, current_gradients=current
    )
    assert reused[0] is current
    for name, grad in recomputed[0].items():
        assert torch.equal(grad, current[name])
    linear = dict(lora_linears(loaded.model))
    with torch.no_grad():
        next(m for n, m in linear.items() if n.endswith("lora_B")).weight.add_(1.0)
    assert not matches_current_weights(loaded.model, ckpt)
