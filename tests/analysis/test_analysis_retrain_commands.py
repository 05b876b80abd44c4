"""``attriblm analyze delta-theta | subset-retrain | counterfactual``: exit 0 with JSON, PNG and
config.yaml; bad options exit 2 with one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from attriblm.cli import main
from attriblm.data.loaders import load_examples
from attriblm.io import read_json, read_yaml

TRAIN = ["--epochs", "1", "--lr", "2e-3", "--train-batch-size", "10", "--quiet"]


@pytest.fixture
def run_cli(monkeypatch, capsys):
    """Run ``attriblm analyze ARGS`` in this process; ``(exit code, stderr)``."""

    def run(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["attriblm", "analyze", *args])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        return code, capsys.readouterr().err

    return run


@pytest.fixture(scope="module")
def data_args(samples_dir, tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("retrain-cli")
    paths = []
    for name, step in (("train", 4), ("test", 2)):
        rows = load_examples(str(samples_dir / f"grammars_small_{name}.jsonl"))[::step]
        path = root / f"{name}.jsonl"
        path.write_text(
            "".join(
                json.dumps({"prompts": e.prompt, "response": e.response, "variation": e.label})
                + "\n"
                for e in rows
            ),
            encoding="utf-8",
        )
        paths.append(str(path))
    return ["--model", "tiny", "--train", paths[0], "--queries", paths[1]]


def _outputs(out: Path, name: str) -> dict:
    assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert read_yaml(out / "config.yaml")["out"] == str(out)
    return read_json(out / f"{name}.json")


def _one_line(code: int, err: str, needle: str) -> None:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], err


@pytest.mark.filterwarnings("ignore:.*truncated")
def test_delta_theta(run_cli, tmp_path):
    code, err = run_cli(
        "delta-theta", "--model", "tiny", "--out", str(tmp_path), "--values", "0,0.5",
        "--n-train-per-class", "4", "--n-test-per-class", "2", "--max-new-tokens", "3",
        "--max-length", "96", *TRAIN,
    )  # fmt: skip
    assert code == 0, err
    report = _outputs(tmp_path, "delta_theta")
    assert [r["n_poisoned"] for r in report["runs"]] == [0, 4]
    assert read_yaml(tmp_path / "config.yaml")["values"] == "0,0.5"


def test_subset_retrain(run_cli, data_args, tmp_path):
    code, err = run_cli(
        "subset-retrain", *data_args, "-m", "gradsim", "--k", "2", "--max-new-tokens", "3",
        "--out", str(tmp_path), *TRAIN,
    )  # fmt: skip
    assert code == 0, err
    report = _outputs(tmp_path, "subset_retrain")
    assert report["methods"]["gradsim"]["subset_size"] <= 2 * report["n_query"]


def test_counterfactual(run_cli, data_args, tmp_path):
    code, err = run_cli(
        "counterfactual", *data_args, "-m", "gradsim", "--n-subsets", "3", "--n-boot", "20",
        "--out", str(tmp_path), *TRAIN,
    )  # fmt: skip
    assert code == 0, err
    report = _outputs(tmp_path, "counterfactual")
    assert report["settings"]["n_subsets"] == 3 and report["settings"]["seeds"] == 2
    assert report["settings"]["train_seeds"] == [42, 43]
    assert (
        report["baseline_label"]["n_defined"] + report["baseline_label"]["n_undefined"]
        == (report["n_query"])
    )
    assert report["seed_noise_ceiling"]["per_pair"].keys() == {"0-1"}
    # config.yaml repeats the run (same seeds → same subsets and LDS)
    again = tmp_path / "again"
    code, err = run_cli(
        "counterfactual", "--config", str(tmp_path / "config.yaml"), "--out", str(again)
    )
    assert code == 0, err
    repeat = read_json(again / "counterfactual.json")
    assert repeat["subsets"] == report["subsets"]
    assert repeat["methods"]["gradsim"]["lds"] == pytest.approx(report["methods"]["gradsim"]["lds"])


def test_bad_options_exit_2(run_cli, data_args, tmp_path):
    out = ["--out", str(tmp_path)]
    _one_line(*run_cli("delta-theta", "--model", "tiny", "--vary", "size", *out), "--vary")
    _one_line(*run_cli("delta-theta", "--model", "tiny", "--values", "0.9", *out), "0.9")
    _one_line(*run_cli("delta-theta", "--model", "tiny", "--values", "a", *out), "--values")
    _one_line(*run_cli("subset-retrain", *data_args, "--k", "0", *out), "--k")
    _one_line(*run_cli("subset-retrain", *data_args, "--expect", "x", *out), "--expect")
    _one_line(*run_cli("subset-retrain", *data_args, "-m", "nope", *out), "nope")
    _one_line(*run_cli("counterfactual", *data_args, "--n-subsets", "1", *out), "--n-subsets")
    _one_line(*run_cli("counterfactual", *data_args, "--fraction", "1.5", *out), "--fraction")
    _one_line(*run_cli("counterfactual", *data_args, "--seeds", "1", *out), "--seeds")
    assert not (tmp_path / "config.yaml").exists()
