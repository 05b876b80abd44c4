"""Run integrity on read (attriblm.runcheck): a run checked against its run.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from attriblm.errors import AttriblmError, DataError
from attriblm.runcheck import check_run, read_score_matrix

N_QUERY, N_TRAIN = 2, 3


def make_run(root: Path, methods=("gradsim", "datainf")) -> Path:
    """A minimal run directory as ``attribute`` writes it (random finite scores)."""
    run = root / "run"
    (run / "scores").mkdir(parents=True)
    (run / "data").mkdir()
    info = {
        "n_train": N_TRAIN,
        "n_query": N_QUERY,
        "methods": {m: {"seconds": 0.1} for m in methods},
    }
    (run / "run.json").write_text(json.dumps(info))
    rows = [{"prompt": "p", "response": "r", "label": "a"}]
    (run / "data" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows * N_TRAIN))
    (run / "data" / "queries.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows * N_QUERY)
    )
    rng = np.random.default_rng(0)
    for method in methods:
        scores = rng.standard_normal((N_QUERY, N_TRAIN)).astype(np.float32)
        save_file({"scores": scores}, str(run / "scores" / f"{method}.safetensors"))
    return run


def test_a_complete_run_passes_with_every_matrix(tmp_path):
    run = check_run(make_run(tmp_path))
    assert run.methods == ["gradsim", "datainf"]
    assert {m: s.shape for m, s in run.scores.items()} == {
        "gradsim": (N_QUERY, N_TRAIN),
        "datainf": (N_QUERY, N_TRAIN),
    }


def test_a_deleted_score_file_is_named(tmp_path):
    run = make_run(tmp_path)
    (run / "scores" / "datainf.safetensors").unlink()
    with pytest.raises(DataError, match=r"datainf\.safetensors: missing, but .*run\.json lists"):
        check_run(run)


def test_garbage_bytes_are_named(tmp_path):
    run = make_run(tmp_path)
    (run / "scores" / "datainf.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(DataError, match=r"datainf\.safetensors: cannot read score file"):
        check_run(run)


@pytest.mark.parametrize(
    "tensors,message",
    [
        ({"other": np.zeros((N_QUERY, N_TRAIN), np.float32)}, "no 2-D tensor 'scores'"),
        ({"scores": np.zeros(N_TRAIN, np.float32)}, "no 2-D tensor 'scores'"),
        ({"scores": np.zeros((N_TRAIN, N_QUERY), np.float32)}, r"scores are \[3, 2\] but"),
    ],
)
def test_wrong_content_is_named(tmp_path, tensors, message):
    run = make_run(tmp_path)
    save_file(tensors, str(run / "scores" / "gradsim.safetensors"))
    with pytest.raises(DataError, match=rf"gradsim\.safetensors: {message}"):
        check_run(run)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_are_named_with_the_first_cell(tmp_path, bad):
    run = make_run(tmp_path)
    scores = np.ones((N_QUERY, N_TRAIN), np.float32)
    scores[1, 2] = bad
    save_file({"scores": scores}, str(run / "scores" / "gradsim.safetensors"))
    with pytest.raises(DataError, match="1 scores are NaN or infinite .*query row 2, train row 3"):
        check_run(run)


def test_an_unlisted_score_file_is_checked_too(tmp_path):
    run = make_run(tmp_path)
    save_file({"scores": np.ones((1, 1), np.float32)}, str(run / "scores" / "extra.safetensors"))
    with pytest.raises(DataError, match=r"extra\.safetensors: scores are \[1, 1\]"):
        check_run(run)


def test_row_counts_must_match_run_json(tmp_path):
    run = make_run(tmp_path)
    with (run / "data" / "train.jsonl").open("a") as handle:
        handle.write(json.dumps({"prompt": "p", "response": "r"}) + "\n")
    with pytest.raises(DataError, match=r"train\.jsonl: 4 rows, but .*n_train = 3"):
        check_run(run)


@pytest.mark.parametrize("text", ["[1, 2]", "{not json"])
def test_run_json_must_be_an_object(tmp_path, text):
    run = make_run(tmp_path)
    (run / "run.json").write_text(text)
    with pytest.raises(DataError, match=r"run\.json: "):
        check_run(run)


def test_not_a_run(tmp_path):
    with pytest.raises(AttriblmError, match="not a run directory"):
        check_run(tmp_path)


def test_a_run_trimmed_to_topk_may_list_methods_there(tmp_path):
    import shutil

    run = make_run(tmp_path)
    shutil.rmtree(run / "scores")
    checked = check_run(run, allow_topk=True, topk_methods={"gradsim", "datainf"})
    assert checked.methods == ["gradsim", "datainf"] and checked.scores == {}
    with pytest.raises(DataError, match="lists method 'datainf'"):
        check_run(run, allow_topk=True, topk_methods={"gradsim"})
    with pytest.raises(DataError, match="missing"):
        check_run(run)  # evaluate needs the score files


def test_read_score_matrix_returns_the_stored_values(tmp_path):
    scores = np.arange(6, dtype=np.float32).reshape(2, 3)
    save_file({"scores": scores}, str(tmp_path / "s.safetensors"))
    np.testing.assert_array_equal(read_score_matrix(tmp_path / "s.safetensors", (2, 3)), scores)
