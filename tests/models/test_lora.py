from __future__ import annotations

import pytest
import torch

from attriblm.errors import ConfigError, ModelError
from attriblm.models.lora import (
    LoraSettings,
    add_lora,
    has_lora,
    lora_delta_norms,
    lora_delta_summary,
    lora_linears,
)
from attriblm.models.tiny import build_tiny_model

EXPECTED_NAMES = [
    f"layers.{layer}.self_attn.{module}.{kind}"
    for layer in (0, 1)
    for module in ("q_proj", "v_proj")
    for kind in ("lora_A", "lora_B")
]


@pytest.fixture
def wrapped():
    model, _ = build_tiny_model(seed=0)
    return add_lora(model, LoraSettings(), seed=42)


def test_study_defaults():
    settings = LoraSettings()
    assert (settings.r, settings.alpha, settings.dropout) == (4, 32, 0.1)
    assert settings.target_modules == ("q_proj", "v_proj")


def test_lora_linears_names_order_and_shapes(wrapped):
    blocks = lora_linears(wrapped)
    assert [name for name, _ in blocks] == EXPECTED_NAMES
    shapes = {name: tuple(linear.weight.shape) for name, linear in blocks}
    # q_proj: 32 -> 32; v_proj: 32 -> 2 kv heads x head_dim 8 = 16.
    assert shapes["layers.0.self_attn.q_proj.lora_A"] == (4, 32)
    assert shapes["layers.0.self_attn.q_proj.lora_B"] == (32, 4)
    assert shapes["layers.1.self_attn.v_proj.lora_B"] == (16, 4)
    assert all(isinstance(linear, torch.nn.Linear) for _, linear in blocks)


def test_only_lora_parameters_train(wrapped):
    trainable = [name for name, p in wrapped.named_parameters() if p.requires_grad]
    assert len(trainable) == 8
    assert all("lora_" in name for name in trainable)


def test_plain_model_has_no_blocks():
    model, _ = build_tiny_model(seed=0)
    assert lora_linears(model) == []
    assert lora_delta_norms(model) == {}
    assert lora_delta_summary(model) == {"mean": 0.0, "std": 0.0, "max": 0.0, "per_module": {}}
    assert not has_lora(model)


def test_delta_norms_zero_at_init_then_scaling_times_ba(wrapped):
    norms = lora_delta_norms(wrapped)
    assert sorted(norms) == sorted({name.rsplit(".", 1)[0] for name in EXPECTED_NAMES})
    assert all(value == 0.0 for value in norms.values())

    blocks = dict(lora_linears(wrapped))
    with torch.no_grad():
        for name, linear in blocks.items():
            if name.endswith("lora_B"):
                linear.weight.fill_(0.5)
    module = "layers.1.self_attn.v_proj"
    a = blocks[f"{module}.lora_A"].weight.double()
    b = blocks[f"{module}.lora_B"].weight.double()
    expected = torch.linalg.matrix_norm((32 / 4) * (b @ a)).item()
    assert lora_delta_norms(wrapped)[module] == pytest.approx(expected, rel=1e-12)


def test_delta_summary_is_mean_population_std_and_max_over_modules(wrapped):
    blocks = dict(lora_linears(wrapped))
    with torch.no_grad():
        for i, (name, linear) in enumerate(blocks.items()):
            if name.endswith("lora_B"):
                linear.weight.fill_(0.1 * i)
    summary = lora_delta_summary(wrapped)
    values = torch.tensor(list(lora_delta_norms(wrapped).values()), dtype=torch.float64)
    assert summary["per_module"] == lora_delta_norms(wrapped)
    assert len(set(summary["per_module"].values())) == 4  # distinct: std > 0
    assert summary["mean"] == pytest.approx(values.mean().item(), rel=1e-12)
    assert summary["std"] == pytest.approx(values.std(correction=0).item(), rel=1e-12)
    assert summary["max"] == values.max().item()


def test_add_lora_is_seeded_and_keeps_global_rng():
    def lora_a(seed: int) -> torch.Tensor:
        model, _ = build_tiny_model(seed=0)
        wrapped = add_lora(model, LoraSettings(), seed=seed)
        return dict(lora_linears(wrapped))["layers.0.self_attn.q_proj.lora_A"].weight.detach()

    torch.manual_seed(7)
    expected = torch.rand(2)
    torch.manual_seed(7)
    first = lora_a(42)
    assert torch.equal(torch.rand(2), expected)
    assert torch.equal(first, lora_a(42))
    assert not torch.equal(first, lora_a(43))


def test_wrapped_model_matches_base_at_init(wrapped):
    base, tokenizer = build_tiny_model(seed=0)
    ids = tokenizer("[INST] hello [/INST] world", return_tensors="pt")["input_ids"]
    wrapped.eval()
    with torch.no_grad():
        assert torch.allclose(wrapped(input_ids=ids).logits, base(input_ids=ids).logits)


def test_add_lora_twice_is_an_error(wrapped):
    with pytest.raises(ModelError, match="already has a LoRA adapter"):
        add_lora(wrapped, LoraSettings())


def test_add_lora_missing_target_is_model_error():
    model, _ = build_tiny_model(seed=0)
    with pytest.raises(ModelError, match="no_such_proj"):
        add_lora(model, LoraSettings(target_modules=("no_such_proj",)))


def test_settings_round_trip_and_unknown_keys():
    settings = LoraSettings(r=8, alpha=16, dropout=0.0, target_modules=("q_proj", "k_proj"))
    data = settings.to_dict()
    assert data["target_modules"] == ["q_proj", "k_proj"]
    assert LoraSettings.from_dict(data) == settings
    with pytest.raises(ConfigError, match="rank"):
        LoraSettings.from_dict({"rank": 4})
