"""Bad input through the command line (issue 8): one line naming the file / row / option, exit
code 2, no partial output. Runs ``attriblm.cli.main`` in-process (same code path as the console
script) on the tiny model; the cases already in ``test_cli.py`` (missing file, missing field,
empty file, unknown method, adapter for another model) run there as subprocesses.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from attriblm.cli import main
from attriblm.data.loaders import load_examples
from attriblm.data.schema import Example
from attriblm.data.writers import write_dataset
from attriblm.io import read_json
from attriblm.models.loading import load_model
from attriblm.models.lora import LoraSettings, add_lora, lora_linears
from attriblm.models.tiny import build_tiny_model
from attriblm.pipeline.attribute import AttributeSettings, attribute

ROW = {"prompts": "Say hi", "response": "hi", "variation": "greet"}


def cli(monkeypatch, capsys, *args: object) -> tuple[int, str, str]:
    """``attriblm ARGS`` in-process: ``(exit code, stdout, stderr)``."""
    monkeypatch.setattr(sys, "argv", ["attriblm", *map(str, args)])
    capsys.readouterr()  # drop what the test's own set-up printed
    with pytest.raises(SystemExit) as info:
        main()
    captured = capsys.readouterr()
    return int(info.value.code or 0), captured.out, captured.err


def assert_one_line_error(result: tuple[int, str, str], *needles: str) -> str:
    code, _out, err = result
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("attriblm: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def io_dirs(tmp_path) -> tuple[Path, Path]:
    """``(inputs dir, outputs parent)``; tests assert the outputs parent stays empty on error."""
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    outputs.mkdir()
    return inputs, outputs


def assert_no_output(outputs: Path) -> None:
    assert sorted(p.name for p in outputs.iterdir()) == []  # no run dir, no .partial sibling


@pytest.fixture(scope="module")
def adapter(tmp_path_factory) -> Path:
    """An untrained LoRA adapter on the tiny model with non-zero B (so every block has grads)."""
    out = tmp_path_factory.mktemp("adapter")
    model, _ = build_tiny_model(seed=0)
    wrapped = add_lora(model, LoraSettings(), seed=1)
    with torch.no_grad():
        for name, linear in lora_linears(wrapped):
            if name.endswith("lora_B"):
                linear.weight.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(2))
    wrapped.save_pretrained(out, save_embedding_layers=False)
    return out


@pytest.fixture(scope="module")
def samples(samples_dir, tmp_path_factory) -> tuple[Path, Path]:
    """Small labelled train (12 rows) and query (4 rows) files cut from the grammars sample."""
    out = tmp_path_factory.mktemp("samples")
    lines = (samples_dir / "grammars_small_train.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    return write_rows(out / "train.jsonl", rows[::7][:12]), write_rows(
        out / "queries.jsonl", rows[3::20][:4]
    )


def attribute_args(train: Path | str, queries: Path | str, out: Path, *extra: object) -> list:
    return [
        "attribute",
        "--model",
        "tiny",
        "--train",
        train,
        "--queries",
        queries,
        "--out",
        out,
        "--quiet",
        *extra,
    ]


# ---------------------------------------------------------------- data files


def test_unreadable_data_file(monkeypatch, capsys, io_dirs, samples):
    inputs, outputs = io_dirs
    unreadable = inputs / "train.jsonl"
    unreadable.mkdir()  # exists but cannot be read as a file (chmod is no barrier for root)
    args = attribute_args(unreadable, samples[1], outputs / "run", "-m", "repsim")
    assert_one_line_error(cli(monkeypatch, capsys, *args), str(unreadable), "cannot read")
    assert_no_output(outputs)


def test_non_utf8_file_names_the_line(monkeypatch, capsys, io_dirs, samples):
    inputs, outputs = io_dirs
    bad = inputs / "latin1.jsonl"
    bad.write_bytes(json.dumps(ROW).encode() + b'\n{"prompts": "caf\xe9", "response": "x"}\n')
    args = attribute_args(samples[0], bad, outputs / "run", "-m", "repsim")
    assert_one_line_error(cli(monkeypatch, capsys, *args), str(bad), "not UTF-8 at line 2")
    assert_no_output(outputs)


def test_malformed_jsonl_line_names_the_line(monkeypatch, capsys, io_dirs, samples):
    inputs, outputs = io_dirs
    bad = inputs / "broken.jsonl"
    bad.write_text(json.dumps(ROW) + "\n\n" + '{"prompts": "a", "response": \n', encoding="utf-8")
    args = attribute_args(bad, samples[1], outputs / "run", "-m", "repsim")
    assert_one_line_error(cli(monkeypatch, capsys, *args), str(bad), "line 3", "malformed JSON")
    assert_no_output(outputs)


@pytest.mark.parametrize("suffix", ["jsonl", "csv"])
def test_renamed_field_names_the_row_and_the_fields_present(
    monkeypatch, capsys, io_dirs, samples, suffix
):
    inputs, outputs = io_dirs
    path = inputs / f"renamed.{suffix}"
    if suffix == "jsonl":
        write_rows(path, [{"prompt": "a", "response": "b", "variation": "v"}])
        where = "line 1"
    else:
        path.write_text("prompt,response,variation\na,b,v\n", encoding="utf-8")
        where = "row 1"
    args = attribute_args(path, samples[1], outputs / "run", "-m", "repsim")
    assert_one_line_error(
        cli(monkeypatch, capsys, *args), str(path), where, "'prompts'", "['prompt', 'response'"
    )
    assert_no_output(outputs)


def test_field_option_naming_an_absent_field(monkeypatch, capsys, io_dirs, samples):
    _, outputs = io_dirs
    args = attribute_args(
        samples[0], samples[1], outputs / "run", "-m", "repsim", "--prompt-field", "question"
    )
    assert_one_line_error(cli(monkeypatch, capsys, *args), str(samples[0]), "line 1", "'question'")
    assert_no_output(outputs)


def test_empty_dataset_split(monkeypatch, capsys, io_dirs, samples):
    inputs, outputs = io_dirs
    dataset = write_dataset({"train": [Example("p", "r", "v")], "test": []}, inputs / "ds")
    args = attribute_args(samples[0], f"{dataset}:test", outputs / "run", "-m", "repsim")
    assert_one_line_error(cli(monkeypatch, capsys, *args), f"{dataset}:test", "no examples")
    assert_no_output(outputs)


# ---------------------------------------------------------------- templates and lengths


def test_train_and_queries_formatted_differently(monkeypatch, capsys, io_dirs, samples):
    inputs, outputs = io_dirs
    templated = write_rows(
        inputs / "templated.jsonl", [{**ROW, "prompts": "[INST] Say hi [/INST]"}] * 3
    )
    args = attribute_args(templated, samples[1], outputs / "run", "-m", "repsim")
    line = assert_one_line_error(
        cli(monkeypatch, capsys, *args), f"{samples[1]}: row 1", f"{templated} row 1", "llama2"
    )
    assert "raw prompt" in line
    assert_no_output(outputs)


def test_mixed_formatting_within_one_file_names_the_row(monkeypatch, capsys, io_dirs, samples):
    inputs, outputs = io_dirs
    rows = [ROW, ROW, {**ROW, "prompts": "<|im_start|>user\nSay hi<|im_end|>"}]
    mixed = write_rows(inputs / "mixed.jsonl", rows)
    args = attribute_args(mixed, samples[1], outputs / "run", "-m", "repsim")
    assert_one_line_error(cli(monkeypatch, capsys, *args), f"{mixed}: row 3", "chatml")
    assert_no_output(outputs)


def test_consistently_pretemplated_data_warns(monkeypatch, capsys, io_dirs):
    inputs, outputs = io_dirs
    rows = [{**ROW, "prompts": f"[INST] Say {w} [/INST]", "variation": w} for w in "abc"]
    data = write_rows(inputs / "templated.jsonl", rows)
    args = attribute_args(data, data, outputs / "run", "-m", "repsim")
    with pytest.warns(UserWarning, match="already carry llama2 chat-template markup"):
        code, _, err = cli(monkeypatch, capsys, *args)
    assert code == 0, err


def test_sequences_over_max_length_are_counted_and_warned(monkeypatch, capsys, io_dirs, adapter):
    inputs, outputs = io_dirs
    long = " ".join(["apple banana cherry"] * 20)
    rows = [{**ROW, "response": long}, ROW, {**ROW, "response": long}]
    data = write_rows(inputs / "long.jsonl", rows)
    args = attribute_args(data, data, outputs / "run", "-m", "gradsim", "--adapter", adapter)
    with pytest.warns(UserWarning, match=r"long.jsonl: 2 of 3 examples truncated to max_length=24"):
        code, _, err = cli(monkeypatch, capsys, *args, "--max-length", 24)
    assert code == 0, err
    assert read_json(outputs / "run" / "run.json")["truncated"] == {"train": 2, "queries": 2}


def test_long_prompts_for_representations_are_counted_and_warned(monkeypatch, capsys, io_dirs):
    inputs, outputs = io_dirs
    long = " ".join(["apple banana cherry"] * 20)
    rows = [{**ROW, "prompts": long}, ROW, {**ROW, "prompts": long}]
    data = write_rows(inputs / "long.jsonl", rows)
    args = attribute_args(data, data, outputs / "run", "-m", "repsim", "--max-length", 24)
    with pytest.warns(UserWarning, match=r"2 of 3 prompts left-truncated to max_length=24"):
        code, _, err = cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert read_json(outputs / "run" / "run.json")["truncated"] == {"train": 2, "queries": 2}


def test_response_truncated_away_is_an_error(monkeypatch, capsys, io_dirs, adapter):
    inputs, outputs = io_dirs
    data = write_rows(inputs / "long.jsonl", [ROW, {**ROW, "prompts": "word " * 50}])
    args = attribute_args(data, data, outputs / "run", "-m", "gradsim", "--adapter", adapter)
    assert_one_line_error(
        cli(monkeypatch, capsys, *args, "--max-length", 24),
        "long.jsonl: row 2",
        "max_length=24",
    )
    assert_no_output(outputs)


# ---------------------------------------------------------------- models and options


def test_tokenizer_without_pad_token_uses_eos_with_a_warning(monkeypatch, capsys, io_dirs, samples):
    inputs, outputs = io_dirs
    model, tokenizer = build_tiny_model(seed=0)
    tokenizer.pad_token = None
    model.save_pretrained(inputs / "model")
    tokenizer.save_pretrained(inputs / "model")
    args = attribute_args(samples[0], samples[1], outputs / "run", "-m", "repsim")
    args[2] = inputs / "model"
    with pytest.warns(UserWarning, match="has no pad token; using its eos token '</s>'"):
        code, _, err = cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert read_json(outputs / "run" / "run.json")["model"]["pad_token_from_eos"] is True


@pytest.mark.parametrize(
    ("option", "method"),
    [
        ("--template", "repsim"),
        ("--loss-mask", "repsim"),  # checked even when no method tokenises with it
        ("--damping-mode", "datainf"),
        ("--repsim-pooling", "repsim"),
        ("--dtype", "repsim"),
        ("--device", "repsim"),
    ],
)
def test_unknown_option_value_names_the_option(
    monkeypatch, capsys, io_dirs, samples, option, method
):
    _, outputs = io_dirs
    args = attribute_args(samples[0], samples[1], outputs / "run", "-m", method, option, "nope")
    assert_one_line_error(cli(monkeypatch, capsys, *args), option, "'nope'")
    assert_no_output(outputs)


@pytest.mark.parametrize("command", ["build", "bench"])
def test_unknown_task_name(monkeypatch, capsys, io_dirs, command):
    _, outputs = io_dirs
    args = ["build", "magic"] if command == "build" else ["bench", "--tasks", "magic", "--quiet"]
    line = assert_one_line_error(
        cli(monkeypatch, capsys, *args, "--out", outputs / "x"), "'magic'", "grammars"
    )
    assert "task" in line
    assert_no_output(outputs)


# ---------------------------------------------------------------- evaluate


@pytest.fixture(scope="module")
def labelled_run(samples, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("labelled") / "run"
    train, queries = (load_examples(str(p)) for p in samples)
    attribute(load_model("tiny"), train, queries, AttributeSettings(methods=["repsim"]), out)
    return out


@pytest.mark.parametrize("k", [13, 0])
def test_evaluate_k_outside_the_train_set(monkeypatch, capsys, labelled_run, k):
    assert_one_line_error(
        cli(monkeypatch, capsys, "evaluate", "--run", labelled_run, "--k", k),
        "--k",
        "n_train = 12",
        f"got {k}",
    )
    assert not (labelled_run / "metrics.json").exists()


def test_evaluate_without_labels_names_the_file_and_row(monkeypatch, capsys, io_dirs):
    inputs, outputs = io_dirs
    data = write_rows(inputs / "unlabelled.jsonl", [{"prompts": "a", "response": "b"}] * 3)
    run = outputs / "run"
    code, _, err = cli(monkeypatch, capsys, *attribute_args(data, data, run, "-m", "repsim"))
    assert code == 0, err  # attributing needs no labels
    assert_one_line_error(
        cli(monkeypatch, capsys, "evaluate", "--run", run),
        str(run / "data" / "train.jsonl"),
        f"line 1 (row 1 of {data})",
        "no label",
    )
    assert not (run / "metrics.json").exists()


def test_evaluate_on_a_missing_run(monkeypatch, capsys, tmp_path):
    result = cli(monkeypatch, capsys, "evaluate", "--run", tmp_path / "nope")
    assert_one_line_error(result, str(tmp_path / "nope"), "not a run directory")
