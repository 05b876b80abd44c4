"""attriblm.rundir.RunDir: the run layout, its writers and readers, the format version."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from attriblm.errors import AttriblmError, DataError
from attriblm.rundir import FORMAT_VERSION, RunDir, check_format_version

N_QUERY, N_TRAIN = 2, 3
ROW = {"prompt": "p", "response": "r", "label": "a"}


def write_run(path: Path, methods=("gradsim", "datainf"), **info) -> RunDir:
    """A small run written through RunDir's writers, as ``attribute`` writes one."""
    run = RunDir(path).create()
    generator = torch.Generator().manual_seed(0)
    for method in methods:
        run.write_scores(method, torch.randn(N_QUERY, N_TRAIN, generator=generator))
    run.write_data("train", [ROW] * N_TRAIN)
    run.write_data("queries", [ROW] * N_QUERY)
    run.write_topk([])
    run.write_config({"model": "tiny"})
    run.write_info(
        {"n_train": N_TRAIN, "n_query": N_QUERY, "methods": {m: {} for m in methods}, **info}
    )
    return run


def _set_version(run: RunDir, version) -> None:
    info = json.loads(run.run_json.read_text())
    if version is None:
        info.pop("format_version")
    else:
        info["format_version"] = version
    run.run_json.write_text(json.dumps(info))


def test_every_path_of_the_layout(tmp_path):
    run = RunDir(tmp_path / "r")
    assert run.run_json == tmp_path / "r" / "run.json"
    assert run.config_yaml == tmp_path / "r" / "config.yaml"
    assert run.scores_file("gradsim") == tmp_path / "r" / "scores" / "gradsim.safetensors"
    assert run.factors_file("ekfac") == tmp_path / "r" / "factors" / "ekfac.safetensors"
    assert run.topk == tmp_path / "r" / "topk.jsonl"
    assert run.data_file("train") == tmp_path / "r" / "data" / "train.jsonl"
    assert run.data_file("queries") == tmp_path / "r" / "data" / "queries.jsonl"
    assert run.metrics_json == tmp_path / "r" / "metrics.json"
    assert run.generations == tmp_path / "r" / "generations.jsonl"
    with pytest.raises(ValueError, match="role"):
        run.data_file("test")
    assert not (tmp_path / "r").exists()  # nothing is created on construction


def test_written_run_reads_back_with_its_format_version_first(tmp_path):
    run = write_run(tmp_path / "r", methods=("lissa", "gradsim"))
    text = run.run_json.read_text()
    assert next(iter(json.loads(text))) == "format_version"
    assert run.read_info()["format_version"] == FORMAT_VERSION == 1
    assert run.is_run() and not run.has_generations()
    assert run.methods() == ["lissa", "gradsim"]  # run.json order, not by name
    assert run.shape() == (N_QUERY, N_TRAIN)
    scores = run.load_scores("gradsim")
    assert scores.shape == (N_QUERY, N_TRAIN) and scores.dtype == np.float32
    assert run.read_data("queries") == [ROW] * N_QUERY and run.config_text() == "model: tiny\n"


def test_methods_list_unlisted_score_files_after_the_listed_ones(tmp_path):
    run = write_run(tmp_path / "r", methods=("gradsim",))
    run.write_scores("aaa", torch.zeros(N_QUERY, N_TRAIN))
    info = run.read_info()
    info["methods"]["missing"] = {}
    run.write_info(info)
    assert run.methods() == ["gradsim", "aaa"]  # only methods with a score file


def test_load_scores_checks_the_shape_and_names_the_file(tmp_path):
    run = write_run(tmp_path / "r")
    run.write_scores("gradsim", torch.zeros(N_TRAIN, N_QUERY))
    with pytest.raises(DataError, match=r"gradsim\.safetensors: scores are \[3, 2\]"):
        run.load_scores("gradsim")
    with pytest.raises(DataError, match=r"exact\.safetensors: missing"):
        run.load_scores("exact")


def test_write_info_does_not_keep_a_callers_version(tmp_path):
    run = RunDir(tmp_path / "r").create()
    written = run.write_info({"format_version": 99, "n_train": 1})
    assert written == {"format_version": FORMAT_VERSION, "n_train": 1}


def test_a_run_without_the_key_reads_as_version_1(tmp_path):
    run = write_run(tmp_path / "r")
    _set_version(run, None)
    assert "format_version" not in json.loads(run.run_json.read_text())
    assert check_format_version({}, run.run_json) == 1
    assert run.read_info()["n_train"] == N_TRAIN


@pytest.mark.parametrize(
    ("version", "needle"),
    [
        (FORMAT_VERSION + 1, f"format_version {FORMAT_VERSION + 1} is newer"),
        ("1", "unknown format_version '1'"),
        (0, "unknown format_version 0"),
        (True, "unknown format_version True"),
    ],
)
def test_a_newer_or_unknown_version_is_a_data_error_naming_run_json(tmp_path, version, needle):
    run = write_run(tmp_path / "r")
    _set_version(run, version)
    with pytest.raises(DataError, match=r"run\.json: ") as error:
        run.read_info()
    assert needle in str(error.value) and "\n" not in str(error.value)


def test_no_run_json_is_not_a_run(tmp_path):
    with pytest.raises(AttriblmError, match="not a run directory"):
        RunDir(tmp_path).read_info()
    assert not RunDir(tmp_path).is_run()


@pytest.mark.parametrize(
    "command",
    [
        ["evaluate", "--run", "{run}"],
        ["report", "{run}", "--out", "{tmp}/r.html"],
        ["inspect", "{run}"],
    ],
    ids=["evaluate", "report", "inspect"],
)
def test_commands_refuse_a_newer_run_format_with_exit_2(tmp_path, attriblm_cli, command):
    run = write_run(tmp_path / "run")
    _set_version(run, FORMAT_VERSION + 1)
    args = [part.format(run=run.path, tmp=tmp_path) for part in command]
    result = attriblm_cli(*args)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"{run.run_json}: format_version 2 is newer" in lines[0]
    assert not run.metrics_json.exists() and not (tmp_path / "r.html").exists()


def test_commands_read_a_run_without_the_key(tmp_path, attriblm_cli):
    run = write_run(tmp_path / "run")
    _set_version(run, None)
    assert attriblm_cli("evaluate", "--run", run.path).returncode == 0
    assert attriblm_cli("inspect", run.path).returncode == 0
