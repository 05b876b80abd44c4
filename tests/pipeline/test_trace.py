"""`trace` end to end on the tiny model: generate, detect, attribute; the run directory."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from attriblm.api import trace as api_trace
from attriblm.cli import main
from attriblm.data.loaders import load_examples
from attriblm.data.schema import Example
from attriblm.errors import ConfigError, DataError
from attriblm.io import load_tensors, read_json, read_yaml
from attriblm.models.loading import load_model
from attriblm.pipeline.attribute import AttributeSettings, attribute
from attriblm.pipeline.detect import parse_detector
from attriblm.pipeline.trace import TraceSettings, trace

GEN = {"max_new_tokens": 6, "gen_batch_size": 3}


@pytest.fixture(scope="module")
def setup(samples_dir, tiny_adapter):
    spec = str(samples_dir / "grammars_small")
    train = load_examples(f"{spec}:train")[::4]
    prompts = [e.prompt for e in load_examples(f"{spec}:test")[:5]]
    return load_model("tiny", adapter=tiny_adapter), train, prompts


@pytest.fixture(scope="module")
def traced(setup, tmp_path_factory):
    loaded, train, prompts = setup
    out = tmp_path_factory.mktemp("trace") / "run"
    result = trace(
        loaded, train, prompts, AttributeSettings(methods=["rept", "gradsim"]),
        TraceSettings(detect="all", **GEN), out,
    )  # fmt: skip
    return result, out


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_generation_is_recorded_and_the_kept_ones_are_the_queries(traced, setup):
    result, out = traced
    _, train, prompts = setup
    rows = _lines(out / "generations.jsonl")
    assert [r["prompt"] for r in rows] == prompts and all(r["kept"] for r in rows)
    assert [r["query"] for r in rows] == list(range(len(prompts)))
    queries = _lines(out / "data" / "queries.jsonl")
    assert [(q["prompt"], q["response"]) for q in queries] == [
        (r["prompt"], r["generation"]) for r in rows
    ]
    scores = load_tensors(out / "scores" / "rept.safetensors")["scores"]
    assert scores.shape == (len(prompts), len(train))
    info = read_json(out / "run.json")
    assert info["trace"]["n_kept"] == len(prompts) and info["trace"]["decoding"] == "greedy"
    assert result.n_kept == len(prompts) and result.metrics is None


def test_the_attribution_is_an_ordinary_attribute_run(traced, setup, tmp_path):
    result, _ = traced
    loaded, train, _ = setup
    queries = [Example(g["prompt"], g["generation"]) for g in result.generations]
    plain = attribute(
        loaded, train, queries, AttributeSettings(methods=["rept", "gradsim"]), tmp_path
    )
    for name in ("rept", "gradsim"):
        assert torch.equal(plain.scores[name], result.attribution.scores[name])


def test_detector_keeps_a_subset_and_target_label_evaluates(traced, setup, tmp_path):
    result, _ = traced
    loaded, train, prompts = setup
    word = result.generations[0]["generation"].split()[0]
    detector = parse_detector(f"contains:{word}")
    expected = [g["index"] for g in result.generations if detector(g["generation"])]
    label = train[0].label
    again = trace(
        loaded, train, prompts, AttributeSettings(methods=["rept"]),
        TraceSettings(detect=f"contains:{word}", target_label=label, **GEN), tmp_path / "run",
    )  # fmt: skip
    assert [g["generation"] for g in again.generations] == [
        g["generation"] for g in result.generations
    ]  # greedy generation is deterministic
    assert [g["index"] for g in again.generations if g["kept"]] == expected
    metrics = read_json(tmp_path / "run" / "metrics.json")
    pooled = metrics["methods"]["rept"]["pooled"]
    assert pooled["target_label"] == label and pooled["n_query"] == len(expected)
    queries = _lines(tmp_path / "run" / "data" / "queries.jsonl")
    assert {q["label"] for q in queries} == {label}


def test_nothing_kept_is_a_one_line_error_that_leaves_nothing(setup, tmp_path):
    loaded, train, prompts = setup
    out = tmp_path / "run"
    with pytest.raises(DataError, match="kept 0 of 5 generations") as err:
        trace(
            loaded, train, prompts, AttributeSettings(methods=["rept"]),
            TraceSettings(detect="regex:^NEVER THIS$", **GEN), out,
        )  # fmt: skip
    assert "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_bad_options_fail_before_generating(setup, tmp_path):
    loaded, train, prompts = setup
    for detect, match in (("regex:(", "regular expression"), ("nope", "unknown detector")):
        with pytest.raises(ConfigError, match=match):
            trace(loaded, train, prompts, AttributeSettings(methods=["rept"]),
                  TraceSettings(detect=detect), tmp_path / "r")  # fmt: skip
    with pytest.raises(ConfigError, match="--target-label 'nope'"):
        trace(loaded, train, prompts, AttributeSettings(methods=["rept"]),
              TraceSettings(target_label="nope"), tmp_path / "r")  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_python_api_records_the_prompts_in_its_config(setup, tmp_path):
    loaded, train, prompts = setup
    run = api_trace(loaded, train, prompts[:2], tmp_path / "api", methods=["rept"], **GEN)
    config = read_yaml(tmp_path / "api" / "config.yaml")
    assert config["prompt"] == prompts[:2] and config["detect"] == "all"
    assert config["method"] == ["rept"] and "queries" not in config
    assert run.n_kept == 2


def _cli(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["attriblm", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_cli_trace_and_its_config_repeats_the_run(setup, tiny_adapter, samples_dir, tmp_path,
                                                  monkeypatch, capsys):  # fmt: skip
    _, _, prompts = setup
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("\n".join(prompts[:3]) + "\n")
    common = ["--model", "tiny", "--adapter", str(tiny_adapter),
              "--train", str(samples_dir / "grammars_small_train.jsonl")]  # fmt: skip
    code, out, err = _cli(
        monkeypatch, capsys, "trace", *common, "--prompts", str(prompts_file), "--prompt",
        "Say hi.", "-m", "rept", "--max-new-tokens", "5", "--target-label",
        "Reverse Order of Words", "--out", str(tmp_path / "run"), "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert "kept 4 of 4 generations" in out and "pooled top-k" in out
    code, _, err = _cli(
        monkeypatch, capsys, "trace", "--config", str(tmp_path / "run" / "config.yaml"),
        "--out", str(tmp_path / "again"), "--quiet",
    )  # fmt: skip
    assert code == 0, err
    first = load_tensors(tmp_path / "run" / "scores" / "rept.safetensors")["scores"]
    second = load_tensors(tmp_path / "again" / "scores" / "rept.safetensors")["scores"]
    assert torch.equal(first, second)
    code, _, err = _cli(
        monkeypatch, capsys, "trace", *common, "-m", "rept", "--out", str(tmp_path / "x"),
    )  # fmt: skip
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "--prompts FILE or --prompt TEXT" in lines[0]
