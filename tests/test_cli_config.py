"""`--config FILE.yaml` on the command line: defaults from the file, flags win, runs repeat.

The commands run in this process through the console entry point (the ``attriblm_cli`` fixture,
tests/conftest.py); tests/test_cli.py covers the installed script as a subprocess.
"""

from __future__ import annotations

import pytest
import torch
import yaml

from attriblm.io import load_tensors, read_json, read_yaml


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, samples_dir, attriblm_main):
    """A tiny fine-tune started from a config file with kebab-case keys."""
    root = tmp_path_factory.mktemp("config")
    config = root / "finetune.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": "tiny",
                "train": str(samples_dir / "grammars_small_train.jsonl"),
                "out": str(root / "ft"),
                "epochs": 1,
                "lr": 1e-3,
                "batch-size": 16,
            }
        )
    )
    assert attriblm_main("finetune", "--config", str(config), "--quiet") == 0
    return root


def test_finetune_takes_its_options_from_the_file(finetuned):
    recorded = read_yaml(finetuned / "ft" / "config.yaml")
    assert recorded["epochs"] == 1 and recorded["batch_size"] == 16 and recorded["lr"] == 1e-3
    assert recorded["model"] == "tiny"
    assert "config" not in recorded and "quiet" not in recorded


def test_attribute_run_config_repeats_the_run(finetuned, samples_dir, attriblm_cli):
    run = finetuned / "run"
    result = attriblm_cli(
        "attribute",
        "--model", "tiny",
        "--adapter", str(finetuned / "ft" / "adapter"),
        "--train", str(samples_dir / "grammars_small_train.jsonl"),
        "--queries", str(samples_dir / "grammars_small_test.jsonl"),
        "--method", "gradsim",
        "--method", "datainf",
        "--damping", "0.2",
        "--out", str(run),
        "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    again = finetuned / "again"
    result = attriblm_cli(
        "attribute", "--config", str(run / "config.yaml"), "--out", str(again), "--quiet"
    )
    assert result.returncode == 0, result.stderr
    config = read_yaml(again / "config.yaml")
    assert config["damping"] == 0.2 and config["method"] == ["gradsim", "datainf"]
    assert config["out"] == str(again)  # the flag overrode the file
    for name in ("gradsim", "datainf"):
        first = load_tensors(run / "scores" / f"{name}.safetensors")["scores"]
        second = load_tensors(again / "scores" / f"{name}.safetensors")["scores"]
        assert torch.equal(first, second)


def test_a_flag_overrides_the_file(finetuned, attriblm_cli):
    config = finetuned / "build.yaml"
    config.write_text(yaml.safe_dump({"preset": "demo", "seed": 1, "out": "ignored"}))
    out = finetuned / "built"
    result = attriblm_cli("build", "grammars", "--config", str(config), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert (out / "train.jsonl").is_file() and not (finetuned / "ignored").exists()


def test_an_unknown_key_is_a_one_line_error(tmp_path, attriblm_cli):
    config = tmp_path / "bad.yaml"
    config.write_text("model: tiny\nlearning_rate: 0.1\n")
    result = attriblm_cli("finetune", "--config", str(config))
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(config) in lines[0] and "learning_rate" in lines[0]


def test_a_config_that_is_not_a_mapping_is_an_error(tmp_path, attriblm_cli):
    config = tmp_path / "list.yaml"
    config.write_text("- 1\n- 2\n")
    result = attriblm_cli("evaluate", "--config", str(config))
    assert result.returncode == 2 and "mapping" in result.stderr
    result = attriblm_cli("evaluate", "--config", str(tmp_path / "missing.yaml"))
    assert result.returncode == 2 and "missing.yaml" in result.stderr


def _leaf_commands(command, path=()):
    subcommands = getattr(command, "commands", None)
    if subcommands:
        for name, sub in subcommands.items():
            yield from _leaf_commands(sub, (*path, name))
    else:
        yield " ".join(path), command


def test_every_command_accepts_config():
    from typer.main import get_command

    from attriblm.cli import app

    leaves = dict(_leaf_commands(get_command(app)))
    assert {"attribute", "finetune", "bench", "report", "analyze theorem1"} <= set(leaves)
    for name, command in leaves.items():
        assert "config" in {p.name for p in command.params}, name


def test_analyze_records_its_config(tmp_path, attriblm_cli):
    out = tmp_path / "t1"
    result = attriblm_cli(
        "analyze", "theorem1", "--dims", "32", "--ranks", "0.25", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    recorded = read_yaml(out / "config.yaml")
    assert recorded["dims"] == "32" and recorded["out"] == str(out)
    again = tmp_path / "t2"
    config = str(out / "config.yaml")
    result = attriblm_cli("analyze", "theorem1", "--config", config, "--out", str(again))
    assert result.returncode == 0, result.stderr
    first, second = (read_json(d / "theorem1.json") for d in (out, again))
    first.pop("wall_s"), second.pop("wall_s")
    assert first == second


def test_log_json_gives_parseable_progress_lines(tmp_path, samples_dir, attriblm_cli):
    import json

    result = attriblm_cli(
        "--log-json",
        "finetune",
        "--model", "tiny",
        "--train", str(samples_dir / "grammars_small_train.jsonl"),
        "--out", str(tmp_path / "ft"),
        "--epochs", "1",
        "--batch-size", "16",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert records and all(r["event"] == "progress" for r in records)
    last = records[-1]
    assert last["stage"] == "fine-tuning" and last["done"] == last["total"] > 0
    assert last["rate_per_s"] > 0
