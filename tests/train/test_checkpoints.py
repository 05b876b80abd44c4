"""Where TracIn's ``η_c`` comes from: the log's ``lr_sum``, else the log's per-step rates."""

from __future__ import annotations

import math

import pytest

from attriblm.errors import ConfigError, DataError
from attriblm.io import read_json, write_json
from attriblm.train.checkpoints import FROM_LOG, FROM_STEPS, discover_checkpoints, load_checkpoints

# Two epochs of three steps under a linear decay (the step rates are all the log needs).
STEP_LRS = [6e-5, 5e-5, 4e-5, 3e-5, 2e-5, 1e-5]


def _finetune_dir(root, *, lr_sum=True, steps=True, meta=True):
    """A fine-tune directory as ``attriblm finetune`` lays it out, without adapter weights."""
    epochs = []
    for e in (1, 2):
        ckpt = root / "checkpoints" / f"epoch-{e:03d}"
        ckpt.mkdir(parents=True)
        write_json(ckpt / "adapter_config.json", {})
        eta = math.fsum(STEP_LRS[3 * (e - 1) : 3 * e])
        entry = {"epoch": e, "lr": STEP_LRS[3 * e - 1], "checkpoint": f"checkpoints/epoch-{e:03d}"}
        if lr_sum:
            entry["lr_sum"] = eta
        if meta:
            write_json(ckpt / "checkpoint.json", {"epoch": e, "lr_sum": eta})
        epochs.append(entry)
    log = {"epochs": epochs}
    if steps:
        log["steps"] = [
            {"epoch": 1 + i // 3, "step": i + 1, "lr": lr} for i, lr in enumerate(STEP_LRS)
        ]
    write_json(root / "train_log.json", log)
    (root / "adapter").mkdir()
    return root


def test_eta_is_the_logged_lr_sum(tmp_path):
    ckpts = load_checkpoints(_finetune_dir(tmp_path))
    assert [c.epoch for c in ckpts] == [1, 2]
    assert [c.eta for c in ckpts] == pytest.approx([15e-5, 6e-5], rel=1e-12)
    assert all(c.eta_source == FROM_LOG for c in ckpts)
    assert ckpts[0].to_json() == {
        "path": str(tmp_path / "checkpoints" / "epoch-001"),
        "epoch": 1,
        "eta": ckpts[0].eta,
        "eta_source": FROM_LOG,
    }
    assert discover_checkpoints(tmp_path / "adapter") == ckpts


def test_older_finetunes_derive_eta_from_the_step_rates(tmp_path):
    ckpts = load_checkpoints(_finetune_dir(tmp_path, lr_sum=False, meta=False))
    assert [c.eta for c in ckpts] == pytest.approx([15e-5, 6e-5], rel=1e-12)
    assert all(c.eta_source == FROM_STEPS for c in ckpts)
    # not the last step's rate, which the log also holds
    log = read_json(tmp_path / "train_log.json")
    assert [c.eta for c in ckpts] != [e["lr"] for e in log["epochs"]]


def test_no_record_of_the_step_rates_is_a_config_error(tmp_path):
    _finetune_dir(tmp_path, lr_sum=False, steps=False, meta=False)
    with pytest.raises(ConfigError, match=r"train_log\.json: epoch 1 has neither lr_sum"):
        load_checkpoints(tmp_path)


def test_checkpoint_metadata_that_disagrees_with_the_log_is_a_data_error(tmp_path):
    _finetune_dir(tmp_path)
    write_json(tmp_path / "checkpoints" / "epoch-002" / "checkpoint.json", {"lr_sum": 1.0})
    with pytest.raises(DataError, match=r"epoch-002/checkpoint\.json: lr_sum 1\.0 disagrees"):
        load_checkpoints(tmp_path)
