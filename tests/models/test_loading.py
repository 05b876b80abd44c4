from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from attriblm.errors import ConfigError, ModelError
from attriblm.models.loading import LoadedModel, load_model
from attriblm.models.lora import LoraSettings, add_lora, lora_linears
from attriblm.models.tiny import build_tiny_model, save_tiny_model

PROMPT = "[INST] Say hello [/INST] hello"


def _logits(loaded: LoadedModel) -> torch.Tensor:
    ids = loaded.tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return loaded.model(input_ids=ids).logits


def _save_adapter(out: Path, **config_overrides) -> Path:
    """A LoRA adapter on the tiny model with non-zero B matrices, saved to ``out``."""
    model, _ = build_tiny_model(seed=0, **config_overrides)
    wrapped = add_lora(model, LoraSettings(), seed=1)
    with torch.no_grad():
        for name, linear in lora_linears(wrapped):
            if name.endswith("lora_B"):
                linear.weight.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(2))
    wrapped.save_pretrained(out, save_embedding_layers=False)
    return out


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-model"), seed=0)


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory) -> Path:
    return _save_adapter(tmp_path_factory.mktemp("tiny-adapter"))


def test_tiny_spec(tmp_path):
    loaded = load_model("tiny")
    assert not loaded.model.training
    identity = loaded.identity
    assert identity["spec"] == "tiny" and identity["path"] is None and identity["adapter"] is None
    assert identity["model_class"] == "LlamaForCausalLM"
    assert identity["dtype"] == "fp32" and identity["device"] == "cpu"
    assert identity["n_parameters"] == sum(p.numel() for p in loaded.model.parameters())
    assert identity["pad_token_from_eos"] is False
    json.dumps(identity)


def test_local_dir_matches_tiny(tiny_dir):
    from_dir = load_model(str(tiny_dir))
    assert from_dir.identity["path"] == str(tiny_dir.resolve())
    assert not from_dir.model.training
    tiny = load_model("tiny", seed=0)
    expected = tiny.model.state_dict()
    assert all(torch.equal(t, expected[k]) for k, t in from_dir.model.state_dict().items())
    assert torch.allclose(_logits(from_dir), _logits(tiny), atol=1e-5)


def test_dtype_option():
    loaded = load_model("tiny", dtype="bf16")
    assert next(loaded.model.parameters()).dtype == torch.bfloat16
    assert loaded.identity["dtype"] == "bf16"
    with pytest.raises(ConfigError, match="fp64"):
        load_model("tiny", dtype="fp64")


def test_device_option():
    with pytest.raises(ConfigError, match="tpu"):
        load_model("tiny", device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            load_model("tiny", device="cuda")
        assert load_model("tiny", device="auto").identity["device"] == "cpu"


def test_missing_path_is_one_line_model_error(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ModelError) as info:
        load_model(str(missing))
    message = str(info.value)
    assert str(missing) in message and "\n" not in message


def test_dir_without_config_is_model_error(tmp_path):
    with pytest.raises(ModelError, match="config.json"):
        load_model(str(tmp_path))


def test_unloadable_dir_is_model_error(tmp_path, tiny_dir):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (broken / name).write_bytes((tiny_dir / name).read_bytes())
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError) as info:
        load_model(str(broken))
    assert str(broken) in str(info.value) and "\n" not in str(info.value)


def test_adapter_loads_trainable(adapter_dir):
    loaded = load_model("tiny", adapter=adapter_dir)
    assert loaded.identity["adapter"] == str(adapter_dir.resolve())
    assert not loaded.model.training
    blocks = lora_linears(loaded.model)
    assert len(blocks) == 8
    assert all(linear.weight.requires_grad for _, linear in blocks)
    trainable = {n for n, p in loaded.model.named_parameters() if p.requires_grad}
    assert all("lora_" in name for name in trainable)
    assert not torch.equal(_logits(loaded), _logits(load_model("tiny")))


def test_adapter_accepts_a_finetune_out_dir(tmp_path):
    """`--adapter ft` finds `ft/adapter/`, the layout `finetune --out ft` writes."""
    _save_adapter(tmp_path / "ft" / "adapter")
    loaded = load_model("tiny", adapter=tmp_path / "ft")
    assert loaded.identity["adapter"] == str((tmp_path / "ft" / "adapter").resolve())


def test_adapter_on_wider_model_is_model_error(tmp_path, adapter_dir):
    wide_dir = tmp_path / "wide"
    model, tokenizer = build_tiny_model(seed=0, hidden_size=48)
    model.save_pretrained(wide_dir)
    tokenizer.save_pretrained(wide_dir)
    with pytest.raises(ModelError) as info:
        load_model(str(wide_dir), adapter=adapter_dir)
    message = str(info.value)
    assert str(adapter_dir.resolve()) in message and "\n" not in message
    assert "does not fit" in message


def test_adapter_without_config_is_model_error(tmp_path):
    adapter = _save_adapter(tmp_path / "adapter")
    (adapter / "adapter_config.json").unlink()
    with pytest.raises(ModelError, match="adapter_config.json"):
        load_model("tiny", adapter=adapter)


def test_missing_adapter_dir_is_model_error(tmp_path):
    with pytest.raises(ModelError, match="nowhere"):
        load_model("tiny", adapter=tmp_path / "nowhere")


def test_adapter_with_absent_targets_is_model_error(tmp_path):
    adapter = _save_adapter(tmp_path / "adapter")
    config_path = adapter / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["target_modules"] = ["no_such_proj"]
    config_path.write_text(json.dumps(config))
    with pytest.raises(ModelError) as info:
        load_model("tiny", adapter=adapter)
    assert str(adapter.resolve()) in str(info.value) and "\n" not in str(info.value)


def test_adapter_with_foreign_tensor_is_model_error(tmp_path):
    from safetensors.torch import load_file, save_file

    adapter = _save_adapter(tmp_path / "adapter")
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    weights["base_model.model.model.layers.9.self_attn.q_proj.lora_A.weight"] = torch.zeros(4, 32)
    save_file(weights, str(adapter / "adapter_model.safetensors"))
    with pytest.raises(ModelError, match="layers.9.self_attn.q_proj"):
        load_model("tiny", adapter=adapter)


def test_pad_token_from_eos(tmp_path):
    model, tokenizer = build_tiny_model(seed=0)
    tokenizer.pad_token = None
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="no pad token; using its eos token '</s>'"):
        loaded = load_model(str(tmp_path))
    assert loaded.identity["pad_token_from_eos"] is True
    assert loaded.tokenizer.pad_token == loaded.tokenizer.eos_token == "</s>"


def test_no_pad_and_no_eos_is_model_error(tmp_path):
    model, tokenizer = build_tiny_model(seed=0)
    tokenizer.pad_token = None
    tokenizer.eos_token = None
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ModelError, match="neither a pad nor an eos"):
        load_model(str(tmp_path))


# ---------------------------------------------------------------- safe loading (pickled weights)


def _pickle_weights(directory: Path, safetensors_name: str, bin_name: str) -> Path:
    """Replace ``directory/safetensors_name`` by a pickled copy ``bin_name`` (torch.save)."""
    from safetensors.torch import load_file

    torch.save(load_file(directory / safetensors_name), directory / bin_name)
    (directory / safetensors_name).unlink()
    return directory / bin_name


def test_pickled_adapter_is_refused_with_a_conversion_hint(tmp_path):
    adapter = _save_adapter(tmp_path / "adapter")
    _pickle_weights(adapter, "adapter_model.safetensors", "adapter_model.bin")
    with pytest.raises(ModelError) as info:
        load_model("tiny", adapter=adapter)
    message = str(info.value)
    assert "\n" not in message and "adapter_model.bin" in message and str(adapter) in message
    assert "save_file(torch.load(" in message and "--allow-pickle" in message


def test_pickled_adapter_loads_when_allowed_and_equals_the_safetensors_one(tmp_path):
    safe = _save_adapter(tmp_path / "safe")
    pickled = _save_adapter(tmp_path / "pickled")
    _pickle_weights(pickled, "adapter_model.safetensors", "adapter_model.bin")
    torch.testing.assert_close(
        _logits(load_model("tiny", adapter=pickled, allow_pickle=True)),
        _logits(load_model("tiny", adapter=safe)),
    )


def test_the_command_line_flag_sets_the_default(tmp_path):
    from attriblm.models import loading

    pickled = _save_adapter(tmp_path / "pickled")
    _pickle_weights(pickled, "adapter_model.safetensors", "adapter_model.bin")
    try:
        loading.set_allow_pickle(True)
        assert load_model("tiny", adapter=pickled).identity["adapter"] == str(pickled.resolve())
        with pytest.raises(ModelError, match="pickled"):
            load_model("tiny", adapter=pickled, allow_pickle=False)  # explicit wins
    finally:
        loading.set_allow_pickle(False)
    with pytest.raises(ModelError, match="pickled"):
        load_model("tiny", adapter=pickled)


def test_model_directory_with_pickled_weights_only_is_refused(tmp_path):
    model_dir = save_tiny_model(tmp_path / "model", seed=0)
    _pickle_weights(model_dir, "model.safetensors", "pytorch_model.bin")
    with pytest.raises(ModelError, match=r"pickled weights only \(pytorch_model\.bin\).*convert"):
        load_model(str(model_dir))
    torch.testing.assert_close(
        _logits(load_model(str(model_dir), allow_pickle=True)), _logits(load_model("tiny"))
    )
