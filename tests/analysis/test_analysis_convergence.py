"""Convergence: ‖Δθ‖ is 0 before training and > 0 after, metrics in [0, 1], weights restored."""

from __future__ import annotations

import pytest
import torch
from peft import get_peft_model_state_dict

from attriblm.analysis.convergence import (
    default_settings,
    initial_adapter_state,
    resolve_methods,
    run_convergence,
)
from attriblm.errors import ConfigError
from attriblm.io import read_json
from attriblm.models.loading import LoadedModel, load_model
from attriblm.models.lora import add_lora
from attriblm.train.finetune import read_train_config


def test_run_over_epochs(tiny_finetune, tmp_path):
    ft = tiny_finetune
    before = {
        k: v.clone()
        for k, v in get_peft_model_state_dict(ft.loaded.model, save_embedding_layers=False).items()
    }
    methods = ("gradsim", "datainf", "repsim")
    report = run_convergence(
        ft.loaded, ft.out_dir, ft.train, ft.queries, tmp_path, methods=methods, n_boot=20
    )
    assert (tmp_path / "convergence.png").read_bytes()[:4] == b"\x89PNG"
    assert read_json(tmp_path / "convergence.json")["epochs"] == report["epochs"]
    rows = report["epochs"]
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    # before training B = 0: no weight change, no loss, the lora_A gradients vanish
    assert rows[0]["delta_norm"]["mean"] == 0.0 and rows[0]["delta_norm"]["max"] == 0.0
    assert rows[0]["loss"] is None
    assert rows[0]["dropped_blocks"] and all(
        b.endswith("lora_A") for b in rows[0]["dropped_blocks"]
    )
    assert len(rows[0]["dropped_blocks"]) == 4
    for row in rows[1:]:
        assert row["delta_norm"]["mean"] > 0.0 and row["delta_norm"]["std"] >= 0.0
        assert len(row["delta_norm"]["per_module"]) == 4
        assert row["loss"] > 0 and row["lr"] > 0 and row["dropped_blocks"] == []
    assert rows[2]["delta_norm"]["mean"] > rows[1]["delta_norm"]["mean"] * 0.5
    log = read_json(ft.out_dir / "train_log.json")
    assert [r["loss"] for r in rows[1:]] == pytest.approx([e["mean_loss"] for e in log["epochs"]])
    for row in rows:
        assert list(row["methods"]) == list(methods)
        for metrics in row["methods"].values():
            for key in ("acc", "cover", "auprc"):
                assert 0.0 <= metrics[key]["value"] <= 1.0
            assert metrics["cover_k"] == 2  # 20 train rows / 10 classes
    # the model's own (final) adapter weights are back
    after = get_peft_model_state_dict(ft.loaded.model, save_embedding_layers=False)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_epoch_zero_is_the_fine_tunes_initial_adapter(tiny_finetune):
    ft = tiny_finetune
    train_settings, _ = read_train_config(ft.out_dir / "config.yaml")
    state = initial_adapter_state(ft.loaded, train_settings.lora, train_settings.seed)
    fresh = add_lora(load_model("tiny").model, train_settings.lora, seed=train_settings.seed)
    expected = get_peft_model_state_dict(fresh, save_embedding_layers=False)
    assert set(state) == set(expected)
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    assert all(not bool(v.any()) for k, v in state.items() if "lora_B" in k)


def test_settings_default_to_the_fine_tunes(tiny_finetune):
    settings = default_settings(tiny_finetune.out_dir / "checkpoints")
    train_settings, _ = read_train_config(tiny_finetune.out_dir / "config.yaml")
    assert settings.template == train_settings.template
    assert settings.loss_mask == train_settings.loss_mask
    assert settings.max_length == train_settings.max_length


def test_bad_input(tiny_finetune, tmp_path):
    ft = tiny_finetune
    with pytest.raises(ConfigError):
        resolve_methods(["tracin"])
    assert "tracin" not in resolve_methods(["all"])
    with pytest.raises(ConfigError, match="final optimizer state"):
        resolve_methods(["less"])  # the final moments belong to no single checkpoint
    assert "less" not in resolve_methods(["all"]) and "rept" in resolve_methods(["all"])
    plain = LoadedModel(model=torch.nn.Linear(2, 2), tokenizer=None)
    with pytest.raises(ConfigError, match="adapter"):
        run_convergence(plain, ft.out_dir, ft.train, ft.queries, tmp_path)
    with pytest.raises(ConfigError, match="checkpoints"):
        run_convergence(ft.loaded, tmp_path / "nowhere", ft.train, ft.queries, tmp_path)
