from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from attriblm.data.schema import Example
from attriblm.errors import ConfigError, ModelError
from attriblm.models.loading import load_model
from attriblm.models.lora import LoraSettings, lora_linears
from attriblm.outputs import MARKER, output_kind
from attriblm.train.checkpoints import FROM_LOG, load_checkpoints
from attriblm.train.finetune import FinetuneResult, TrainSettings, finetune, read_train_config

WORDS = ["cat", "dog", "sun", "moon", "tree", "car", "red", "blue"]
EXAMPLES = [Example(f"Say {w} twice", f"{w} {w}", "double") for w in WORDS] + [
    Example(f"Spell {w}", " ".join(w), "spell") for w in WORDS
]
SETTINGS = TrainSettings(epochs=2, lr=1e-2, batch_size=5, seed=3, lora=LoraSettings(r=2))


def _adapter_tensors(adapter_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(adapter_dir / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[FinetuneResult, list, object]:
    steps: list = []
    loaded = load_model("tiny")
    result = finetune(
        loaded,
        EXAMPLES,
        SETTINGS,
        tmp_path_factory.mktemp("finetune"),
        data_source="inline",
        progress=lambda step, total, loss: steps.append((step, total, loss)),
    )
    return result, steps, loaded


def test_outputs_and_checkpoints(run):
    result, _, _ = run
    assert result.checkpoints == [
        result.out_dir / "checkpoints" / "epoch-001",
        result.out_dir / "checkpoints" / "epoch-002",
    ]
    assert result.adapter_dir == result.out_dir / "adapter"
    for adapter in [*result.checkpoints, result.adapter_dir]:
        assert (adapter / "adapter_model.safetensors").is_file()
        assert (adapter / "adapter_config.json").is_file()
    leftovers = [p.name for p in result.out_dir.rglob(".*") if p.name != MARKER]
    assert leftovers == []  # no temporary files or directories
    assert output_kind(result.out_dir) == "finetune"  # marked as attriblm's own output


def test_checkpoints_reload_with_load_model(run):
    result, _, _ = run
    final = _adapter_tensors(result.adapter_dir)
    last = _adapter_tensors(result.checkpoints[-1])
    first = _adapter_tensors(result.checkpoints[0])
    assert all(torch.equal(final[k], last[k]) for k in final)
    assert not all(torch.equal(final[k], first[k]) for k in final)

    reloaded = load_model("tiny", adapter=result.checkpoints[0])
    weights = {name: linear.weight.detach() for name, linear in lora_linears(reloaded.model)}
    stored = {
        key.removeprefix("base_model.model.model.").removesuffix(".weight"): value
        for key, value in first.items()
    }
    assert weights.keys() == stored.keys()
    assert all(torch.equal(weights[k], stored[k]) for k in weights)


def test_loaded_model_becomes_trained_adapter(run):
    result, _, loaded = run
    assert not loaded.model.training
    assert len(lora_linears(loaded.model)) == 8
    assert loaded.identity["adapter"] == str(result.adapter_dir)


def test_progress_and_losses(run):
    result, steps, _ = run
    total = 2 * 4  # 16 examples in batches of 5 -> 4 steps per epoch
    assert [s[:2] for s in steps] == [(i, total) for i in range(1, total + 1)]
    assert [s[2] for s in steps] == result.losses
    assert all(loss > 0 for loss in result.losses)


def test_train_log(run):
    result, _, _ = run
    log = json.loads((result.out_dir / "train_log.json").read_text())
    assert log["n_examples"] == 16 and log["n_truncated"] == 0
    assert (log["steps_per_epoch"], log["total_steps"]) == (4, 8)
    assert [s["step"] for s in log["steps"]] == list(range(1, 9))
    assert [s["epoch"] for s in log["steps"]] == [1] * 4 + [2] * 4
    # Linear decay from lr to 0 over 8 steps; step k (from 1) uses lr * (1 - (k - 1) / 8).
    expected = [1e-2 * (1 - k / 8) for k in range(8)]
    assert [s["lr"] for s in log["steps"]] == pytest.approx(expected)
    epochs = log["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert [e["lr"] for e in epochs] == pytest.approx([expected[3], expected[7]])
    assert [(e["first_step"], e["last_step"]) for e in epochs] == [(1, 4), (5, 8)]
    assert epochs[0]["mean_loss"] == pytest.approx(sum(result.losses[:4]) / 4)
    assert all(e["wall_s"] >= 0 for e in epochs)
    assert epochs[1]["checkpoint"] == "checkpoints/epoch-002"


def test_tracin_weights_are_the_summed_learning_rates_of_each_epoch(run):
    """Linear decay 1e-2 → 0 over 8 steps, 4 per epoch: η_1 = 1e-2·(8+7+6+5)/8, η_2 = 1e-2·10/8."""
    result, _, _ = run
    etas = [1e-2 * 26 / 8, 1e-2 * 10 / 8]
    log = json.loads((result.out_dir / "train_log.json").read_text())
    assert [e["lr_sum"] for e in log["epochs"]] == pytest.approx(etas, rel=1e-12)
    assert result.checkpoint_etas == pytest.approx(etas, rel=1e-12)
    for ckpt, eta, steps in zip(result.checkpoints, etas, [(1, 4), (5, 8)], strict=True):
        meta = json.loads((ckpt / "checkpoint.json").read_text())
        assert meta["lr_sum"] == pytest.approx(eta, rel=1e-12)
        assert (meta["first_step"], meta["last_step"]) == steps
        assert meta["lr_last"] == pytest.approx(1e-2 * (9 - steps[1]) / 8)
    # the last step's rate (the old weight) would give the final epoch a tenth of its share
    assert meta["lr_last"] / etas[1] == pytest.approx(0.1)
    loaded = load_checkpoints(result.out_dir)
    assert [c.eta for c in loaded] == result.checkpoint_etas
    assert [c.eta_source for c in loaded] == [FROM_LOG, FROM_LOG]


def test_config_round_trips(run):
    result, _, _ = run
    settings, data = read_train_config(result.out_dir / "config.yaml")
    assert settings == SETTINGS
    assert data["resolved"]["model"]["spec"] == "tiny"
    assert data["resolved"]["data"] == {"source": "inline", "n_examples": 16}
    raw = yaml.safe_load((result.out_dir / "config.yaml").read_text())
    assert raw["resolved"]["settings"]["lora"]["target_modules"] == ["q_proj", "v_proj"]
    assert TrainSettings.from_dict(raw["resolved"]["settings"]) == SETTINGS
    # the flat keys are the `finetune` command's flags
    assert raw["model"] == "tiny" and raw["train"] == "inline"
    assert raw["lora_targets"] == "q_proj,v_proj" and raw["epochs"] == SETTINGS.epochs


def test_same_seed_gives_identical_adapter(run, tmp_path):
    result, _, _ = run
    again = finetune(load_model("tiny"), EXAMPLES, SETTINGS, tmp_path / "again")
    assert again.losses == result.losses
    first, second = _adapter_tensors(result.adapter_dir), _adapter_tensors(again.adapter_dir)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_loss_decreases_with_high_lr(tmp_path):
    settings = TrainSettings(epochs=6, lr=5e-2, batch_size=4, seed=0, lora=LoraSettings(r=4))
    result = finetune(load_model("tiny"), EXAMPLES, settings, tmp_path)
    first_epoch, last_epoch = result.losses[:4], result.losses[-4:]
    assert sum(last_epoch) / 4 < sum(first_epoch) / 4 - 0.3


def test_rerun_replaces_previous_run(tmp_path):
    short = TrainSettings(epochs=1, lr=1e-2, batch_size=8, lora=LoraSettings(r=2))
    finetune(
        load_model("tiny"), EXAMPLES[:8], TrainSettings(**{**vars(short), "epochs": 2}), tmp_path
    )
    result = finetune(load_model("tiny"), EXAMPLES[:8], short, tmp_path)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch-001"]
    log = json.loads((tmp_path / "train_log.json").read_text())
    assert len(log["epochs"]) == 1 and result.checkpoints == [
        tmp_path.resolve() / "checkpoints" / "epoch-001"
    ]


def test_truncation_warns_with_count(tmp_path):
    long = Example("Hi", "word " * 40, "long")
    settings = TrainSettings(epochs=1, batch_size=4, max_length=24, lora=LoraSettings(r=2))
    with pytest.warns(UserWarning, match=r"2 of 3 examples truncated"):
        finetune(load_model("tiny"), [long, long, EXAMPLES[0]], settings, tmp_path)
    assert json.loads((tmp_path / "train_log.json").read_text())["n_truncated"] == 2


def test_model_with_adapter_is_rejected(run, tmp_path):
    result, _, _ = run
    with_adapter = load_model("tiny", adapter=result.adapter_dir)
    with pytest.raises(ModelError, match="plain base model"):
        finetune(with_adapter, EXAMPLES, SETTINGS, tmp_path)


@pytest.mark.parametrize(
    "change,option",
    [
        ({"epochs": 0}, "--epochs"),
        ({"batch_size": 0}, "--batch-size"),
        ({"lr": 0.0}, "--lr"),
        ({"lora": LoraSettings(dropout=1.0)}, "--lora-dropout"),
    ],
)
def test_invalid_settings(tmp_path, change, option):
    settings = TrainSettings(**{**vars(SETTINGS), **change})
    with pytest.raises(ConfigError, match=option):
        finetune(load_model("tiny"), EXAMPLES, settings, tmp_path)


def test_unknown_setting_is_config_error():
    with pytest.raises(ConfigError, match="learning_rate"):
        TrainSettings.from_dict({"learning_rate": 1.0})
