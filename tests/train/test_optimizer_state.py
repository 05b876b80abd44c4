from __future__ import annotations

import json

import pytest
import torch

from attriblm.data.schema import Example
from attriblm.data.tokenize import collate, encode_examples
from attriblm.errors import ConfigError, DataError
from attriblm.features.gradients import per_example_gradients
from attriblm.models.loading import load_model
from attriblm.models.lora import LoraSettings, add_lora, lora_linears
from attriblm.models.tiny import build_tiny_model
from attriblm.train.finetune import TrainSettings, finetune
from attriblm.train.loss import model_per_example_loss
from attriblm.train.optimizer_state import (
    STATE_INFO,
    STATE_TENSORS,
    load_optimizer_state,
    moments_of,
    save_optimizer_state,
)

EXAMPLES = [Example(f"Say {w} twice", f"{w} {w}", "a") for w in ("cat", "dog", "sun", "moon")]


def _stepped(n_steps: int = 2):
    model, tokenizer = build_tiny_model(seed=0)
    model = add_lora(model, LoraSettings(r=2, alpha=4, dropout=0.0), seed=1)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2, betas=(0.8, 0.95), eps=1e-7)
    batch = collate(encode_examples(EXAMPLES, tokenizer), tokenizer.pad_token_id)
    for _ in range(n_steps):
        model_per_example_loss(model, batch).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    return model, optimizer


def test_moments_saved_and_reloaded(tmp_path):
    model, optimizer = _stepped(n_steps=3)
    save_optimizer_state(optimizer, model, tmp_path)
    info = json.loads((tmp_path / STATE_INFO).read_text())
    assert info["betas"] == [0.8, 0.95] and info["eps"] == 1e-7 and info["step"] == 3
    moments = load_optimizer_state(tmp_path)
    assert (moments.beta1, moments.beta2, moments.eps, moments.step) == (0.8, 0.95, 1e-7, 3)
    blocks = lora_linears(model)
    assert list(moments.exp_avg) == [name for name, _ in blocks]
    for name, linear in blocks:
        state = optimizer.state[linear.weight]
        assert torch.equal(moments.exp_avg[name], state["exp_avg"].flatten())
        assert torch.equal(moments.exp_avg_sq[name], state["exp_avg_sq"].flatten())
        assert info["blocks"][name] == list(linear.weight.shape)
    assert len(moments.digest) == 64


def test_finetune_saves_its_final_moments(tmp_path):
    """One full-batch AdamW step from zero moments: m = (1-β₁)ḡ, v = (1-β₂)ḡ² at the init."""
    settings = TrainSettings(
        epochs=1, lr=1e-2, batch_size=len(EXAMPLES), seed=5, lora=LoraSettings(r=2, dropout=0.0)
    )
    result = finetune(load_model("tiny"), EXAMPLES, settings, tmp_path / "ft")
    moments = load_optimizer_state(result.adapter_dir)
    assert moments.step == 1 and (moments.beta1, moments.beta2) == (0.9, 0.999)

    init = load_model("tiny")
    model = add_lora(init.model, settings.lora, seed=settings.seed)
    encoded = encode_examples(EXAMPLES, init.tokenizer)
    grads = per_example_gradients(model, encoded, pad_token_id=init.tokenizer.pad_token_id)
    assert set(grads) == set(moments.exp_avg)
    for block, g in grads.items():
        mean = g.double().mean(dim=0)
        torch.testing.assert_close(
            moments.exp_avg[block].double(), 0.1 * mean, atol=1e-9, rtol=1e-4
        )
        torch.testing.assert_close(
            moments.exp_avg_sq[block].double(), 0.001 * mean.square(), atol=1e-12, rtol=1e-3
        )
    assert moments_of({"adapter": str(result.adapter_dir)}).digest == moments.digest


def test_missing_moments_say_how_to_get_them(tmp_path):
    with pytest.raises(ConfigError, match="re-run `attriblm finetune`") as err:
        load_optimizer_state(tmp_path)
    assert "\n" not in str(err.value) and str(tmp_path) in str(err.value)
    with pytest.raises(ConfigError, match="no adapter is loaded"):
        moments_of({"adapter": None})


def test_tampered_tensor_file_is_refused(tmp_path):
    model, optimizer = _stepped(n_steps=1)
    save_optimizer_state(optimizer, model, tmp_path)
    data = bytearray((tmp_path / STATE_TENSORS).read_bytes())
    data[-1] ^= 0xFF
    (tmp_path / STATE_TENSORS).write_bytes(bytes(data))
    with pytest.raises(DataError, match="sha256"):
        load_optimizer_state(tmp_path)
