"""Writers: the study's format, round trips through the loaders, atomic replacement."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from attriblm.data import writers
from attriblm.data.loaders import load_examples
from attriblm.data.schema import Example, FieldMap
from attriblm.data.tasks import build_task
from attriblm.data.writers import write_dataset
from attriblm.errors import DataError, OutputError
from attriblm.outputs import MARKER


@pytest.fixture(scope="module")
def splits() -> dict[str, list[Example]]:
    return build_task("grammars", "quick")


def leftovers(parent, name):
    return [p.name for p in parent.iterdir() if p.name.startswith(f".{name}.")]


def test_round_trip_dir_and_jsonl(tmp_path, splits):
    out = write_dataset(splits, tmp_path / "grammars")
    assert out == tmp_path / "grammars"
    for name, rows in splits.items():
        assert load_examples(f"{out}:{name}") == rows
        assert load_examples(str(out / f"{name}.jsonl")) == rows
    first = json.loads((out / "train.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert list(first) == ["prompts", "response", "variation"]
    assert leftovers(tmp_path, "grammars") == []


def test_matches_study_layout(tmp_path, study_samples_dir, splits):
    """Compared with the study's published files (skipped without ../shared/samples)."""
    out = write_dataset(splits, tmp_path / "g")
    assert (out / "dataset_dict.json").is_file()
    study_dir = study_samples_dir / "grammars_small"
    study = json.loads((study_dir / "dataset_dict.json").read_text())
    ours = json.loads((out / "dataset_dict.json").read_text())
    assert sorted(ours["splits"]) == sorted(study["splits"])
    study_info = json.loads((study_dir / "train" / "dataset_info.json").read_text())
    our_info = json.loads((out / "train" / "dataset_info.json").read_text())
    assert our_info["features"] == study_info["features"]


def test_field_map_and_unlabelled(tmp_path):
    fields = FieldMap(prompt="q", response="a", label="cls")
    rows = {"train": [Example("p1", "r1"), Example("p2", "r2")], "test": [Example("p", "r")]}
    out = write_dataset(rows, tmp_path / "u", fields)
    line = json.loads((out / "train.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert line == {"q": "p1", "a": "r1"}
    assert load_examples(f"{out}:train", fields) == rows["train"]
    with pytest.raises(DataError, match="missing field 'prompts'"):
        load_examples(f"{out}:train")


def test_non_ascii_text_round_trips(tmp_path):
    rows = {"train": [Example("café → naïve", "ünïcödé ✓", "é")]}
    out = write_dataset(rows, tmp_path / "utf")
    assert "café" in (out / "train.jsonl").read_text(encoding="utf-8")
    assert load_examples(str(out / "train.jsonl")) == rows["train"]
    assert load_examples(str(out)) == rows["train"]  # the only split


def test_empty_split_is_written_reopenable(tmp_path):
    out = write_dataset({"train": [Example("p", "r")], "test": []}, tmp_path / "e")
    assert load_examples(f"{out}:train") == [Example("p", "r")]
    with pytest.raises(DataError, match="no examples"):
        load_examples(f"{out}:test")


def test_partial_labels_rejected(tmp_path):
    rows = {"train": [Example("p", "r", "c"), Example("p", "r")]}
    with pytest.raises(DataError, match="split 'train': row 2 has no label"):
        write_dataset(rows, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    assert leftovers(tmp_path, "bad") == []


def test_bad_split_name(tmp_path):
    with pytest.raises(DataError, match="split name 'a/b'"):
        write_dataset({"a/b": [Example("p", "r")]}, tmp_path / "x")


def test_replaces_an_earlier_dataset_only_with_overwrite(tmp_path, splits):
    out = write_dataset({"train": [Example("old", "row")]}, tmp_path / "g")
    with pytest.raises(OutputError, match="already holds an attriblm dataset.*--overwrite"):
        write_dataset(splits, out)
    assert load_examples(f"{out}:train") == [Example("old", "row")]
    write_dataset(splits, out, overwrite=True)
    assert load_examples(f"{out}:train") == splits["train"]
    assert load_examples(f"{out}:test") == splits["test"]
    assert leftovers(tmp_path, "g") == []


def test_an_earlier_dataset_without_marker_is_recognised(tmp_path, splits):
    out = write_dataset({"train": [Example("old", "row")]}, tmp_path / "g")
    (out / MARKER).unlink()  # as written before markers existed
    write_dataset(splits, out, overwrite=True)
    assert load_examples(f"{out}:test") == splits["test"]


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_foreign_directory_is_never_replaced(tmp_path, splits, overwrite):
    out = tmp_path / "g"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(OutputError, match="non-empty directory that attriblm did not write"):
        write_dataset(splits, out, overwrite=overwrite)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert leftovers(tmp_path, "g") == []


def test_an_empty_directory_is_used(tmp_path, splits):
    (tmp_path / "g").mkdir()
    out = write_dataset(splits, tmp_path / "g")
    assert load_examples(f"{out}:test") == splits["test"]


def test_out_dir_is_a_file(tmp_path, splits):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="exists and is not an attriblm dataset"):
        write_dataset(splits, tmp_path / "f", overwrite=True)
    assert (tmp_path / "f").read_text() == "x"


def boom(*args, **kwargs):
    raise OSError("disk full")


def test_failure_mid_write_leaves_no_out_dir(tmp_path, splits, monkeypatch):
    # fail after the DatasetDict is saved, while the JSON lines files are written
    monkeypatch.setattr(writers, "write_jsonl", boom)
    with pytest.raises(OSError, match="disk full"):
        write_dataset(splits, tmp_path / "g")
    assert not (tmp_path / "g").exists()
    assert leftovers(tmp_path, "g") == []


def test_failure_keeps_previous_out_dir(tmp_path, splits, monkeypatch):
    out = write_dataset({"train": [Example("old", "row")]}, tmp_path / "g")
    monkeypatch.setattr(writers, "write_jsonl", boom)
    with pytest.raises(OSError):
        write_dataset(splits, out, overwrite=True)
    assert load_examples(f"{out}:train") == [Example("old", "row")]
    assert leftovers(tmp_path, "g") == []


def test_failure_during_swap_restores_previous(tmp_path, splits, monkeypatch):
    out = write_dataset({"train": [Example("old", "row")]}, tmp_path / "g")
    real_replace = os.replace
    moved = []

    def flaky_replace(src, dst):
        if str(src).endswith(".partial"):  # moving the complete new dir into place
            raise OSError("crash")
        if Path(src) == out:
            moved.append(dst)  # the old dir set aside first
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", flaky_replace)
    with pytest.raises(OSError, match="crash"):
        write_dataset(splits, out, overwrite=True)
    monkeypatch.undo()
    assert len(moved) == 1  # the swap itself failed, after the old dir was set aside
    assert load_examples(f"{out}:train") == [Example("old", "row")]
    assert leftovers(tmp_path, "g") == []


def test_no_progress_bars_on_stderr_and_setting_restored(tmp_path, splits, capfd):
    import datasets

    datasets.enable_progress_bars()
    write_dataset(splits, tmp_path / "out")
    assert "Saving the dataset" not in capfd.readouterr().err
    assert datasets.is_progress_bar_enabled()
