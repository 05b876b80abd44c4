"""The command line end to end on the tiny model: outputs, and bad input → one line, exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from attriblm.io import load_tensors, read_json
from attriblm.rundir import FORMAT_VERSION


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "attriblm", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def cli_adapter(tmp_path_factory, samples_dir) -> Path:
    out = tmp_path_factory.mktemp("cli") / "ft"
    result = run_cli(
        "finetune",
        "--model",
        "tiny",
        "--train",
        str(samples_dir / "grammars_small_train.jsonl"),
        "--out",
        str(out),
        "--epochs",
        "2",
        "--lr",
        "1e-3",
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    return out


def test_finetune_writes_epoch_checkpoints_and_log(cli_adapter):
    assert (cli_adapter / "adapter" / "adapter_config.json").is_file()
    assert sorted(p.name for p in (cli_adapter / "checkpoints").iterdir()) == [
        "epoch-001",
        "epoch-002",
    ]
    log = read_json(cli_adapter / "train_log.json")
    assert log  # content is tested in tests/train


def test_attribute_all_then_evaluate(cli_adapter, samples_dir, tmp_path):
    # both input forms in one run: train from a save_to_disk dir, queries from a jsonl file
    train = f"{samples_dir / 'grammars_small'}:train"
    queries = str(samples_dir / "grammars_small_test.jsonl")
    run = tmp_path / "run"
    result = run_cli(
        "attribute",
        "--model",
        "tiny",
        "--adapter",
        str(cli_adapter / "adapter"),
        "--train",
        train,
        "--queries",
        queries,
        "--method",
        "all",
        "--out",
        str(run),
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    info = read_json(run / "run.json")
    assert next(iter(info)) == "format_version" and info["format_version"] == FORMAT_VERSION
    methods = info["methods"]
    assert len(methods) == 13  # every registered method
    for name in methods:
        assert load_tensors(run / "scores" / f"{name}.safetensors")["scores"].shape == (20, 80)
    lines = (run / "topk.jsonl").read_text().splitlines()
    assert len(lines) == 13 * 20 and len(json.loads(lines[0])["top"]) == 10

    result = run_cli("evaluate", "--run", str(run))
    assert result.returncode == 0, result.stderr
    metrics = read_json(run / "metrics.json")["methods"]
    assert set(metrics) == set(methods)
    for m in metrics.values():
        assert 0.0 <= m["acc"]["value"] <= 1.0
        assert m["cover"]["k"] == 8  # 80 train rows / 10 classes
    assert "AUPRC" in result.stdout and "gradsim" in result.stdout


def test_missing_train_file(tmp_path, samples_dir):
    missing = tmp_path / "nope.jsonl"
    result = run_cli(
        "attribute",
        "--model",
        "tiny",
        "--train",
        str(missing),
        "--queries",
        str(samples_dir / "grammars_small_test.jsonl"),
        "--method",
        "gradsim",
        "--out",
        str(tmp_path / "run"),
    )
    assert_one_line_error(result, "nope.jsonl")
    assert not (tmp_path / "run").exists()


def test_missing_field_names_file_and_row(tmp_path, cli_adapter, samples_dir):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompts": "a", "response": "b", "variation": "x"}\n{"prompts": "c"}\n')
    result = run_cli(
        "attribute",
        "--model",
        "tiny",
        "--adapter",
        str(cli_adapter / "adapter"),
        "--train",
        str(bad),
        "--queries",
        str(samples_dir / "grammars_small_test.jsonl"),
        "--method",
        "gradsim",
        "--out",
        str(tmp_path / "run"),
    )
    assert_one_line_error(result, "bad.jsonl", "2", "response")
    assert not (tmp_path / "run").exists()


def test_empty_split(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result = run_cli(
        "finetune", "--model", "tiny", "--train", str(empty), "--out", str(tmp_path / "ft")
    )
    assert_one_line_error(result, "empty.jsonl")
    assert not (tmp_path / "ft").exists()


def test_unknown_method(tmp_path, samples_dir):
    data = str(samples_dir / "grammars_small_test.jsonl")
    result = run_cli(
        "attribute",
        "--model",
        "tiny",
        "--train",
        data,
        "--queries",
        data,
        "--method",
        "magic",
        "--out",
        str(tmp_path / "run"),
    )
    assert_one_line_error(result, "magic", "gradsim")


def test_adapter_for_another_model(tmp_path, cli_adapter, samples_dir):
    other = tmp_path / "other-model"
    from attriblm.models.tiny import save_tiny_model

    save_tiny_model(other, seed=0, hidden_size=48, intermediate_size=96)
    data = str(samples_dir / "grammars_small_test.jsonl")
    result = run_cli(
        "attribute",
        "--model",
        str(other),
        "--adapter",
        str(cli_adapter / "adapter"),
        "--train",
        data,
        "--queries",
        data,
        "--method",
        "gradsim",
        "--out",
        str(tmp_path / "run"),
    )
    assert_one_line_error(result, str(cli_adapter / "adapter"))
    assert not (tmp_path / "run").exists()


def test_help_on_every_command(attriblm_cli):
    result = run_cli("--help")  # the installed entry point, once
    assert result.returncode == 0 and "Usage" in result.stdout
    for command in ("finetune", "attribute", "evaluate", "build", "demo", "methods"):
        result = attriblm_cli(command, "--help")
        assert result.returncode == 0 and "Usage" in result.stdout, command


def test_version_flag():
    from attriblm import __version__

    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"attriblm {__version__}"
