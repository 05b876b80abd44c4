"""The study's published folders: discovery, checks, presets and class-balanced subsampling.

Folders are written here in the study's format (``save_to_disk`` of a few rows), so nothing
needs ``../shared``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from attriblm.data.schema import Example
from attriblm.data.study import (
    STUDY_FOLDERS,
    STUDY_PRESETS,
    find_study_folders,
    load_study_folder,
    study_sizes,
    subsample,
    subsample_task,
)
from attriblm.errors import ConfigError, DataError


def save_study_folder(path: Path, splits: dict[str, list[dict]]) -> Path:
    """A DatasetDict saved as the study publishes it (string columns, one folder per split)."""
    import datasets

    datasets.disable_progress_bars()
    datasets.DatasetDict(
        {
            name: datasets.Dataset.from_dict({k: [r[k] for r in rows] for k in rows[0]})
            for name, rows in splits.items()
        }
    ).save_to_disk(str(path))
    return path


def rows(label: str, n: int, start: int = 0) -> list[dict]:
    return [
        {"prompts": f"{label} prompt {i}", "response": f"answer {i}", "variation": label}
        for i in range(start, start + n)
    ]


def mix(n_harmful: int, n_benign: int, n_test: int) -> dict[str, list[dict]]:
    return {
        "train": rows("harmful", n_harmful) + rows("benign", n_benign),
        "test": rows("harmful", n_test, start=1000),
    }


def test_every_task_has_a_folder_and_every_preset_names_known_tasks():
    assert sorted(STUDY_FOLDERS.values()) == sorted(
        ["harmful-s", "harmful-m", "harmful-l", "grammars", "math", "emotion"]
        + ["backdoor-1", "backdoor-3", "backdoor-5"]
    )
    assert STUDY_FOLDERS["mixedM"] == "harmful-m" and STUDY_FOLDERS["multibackdoor5"] == (
        "backdoor-5"
    )
    for sizes in STUDY_PRESETS.values():
        assert set(sizes) <= set(STUDY_FOLDERS.values())


def test_found_and_missing_folders(tmp_path):
    save_study_folder(tmp_path / "mixedS", mix(2, 2, 2))
    save_study_folder(tmp_path / "grammars", {"train": rows("r", 2), "test": rows("r", 1)})
    (tmp_path / "README.md").write_text("not a folder", encoding="utf-8")
    (tmp_path / ".cache").mkdir()
    folders = find_study_folders(tmp_path, ["harmful-s", "grammars", "math"])
    assert list(folders.found) == ["harmful-s", "grammars"] and folders.missing == ["math"]
    line = folders.summary()
    assert "\n" not in line
    assert "found mixedS → harmful-s, grammars → grammars" in line
    assert "missing math (math)" in line
    only = find_study_folders(tmp_path, ["grammars"])
    assert list(only.found) == ["grammars"] and only.missing == []


def test_unknown_folder_is_an_error_naming_it(tmp_path):
    save_study_folder(tmp_path / "mixedS", mix(2, 2, 2))
    (tmp_path / "mixedXL").mkdir()
    with pytest.raises(DataError, match=r"mixedXL: unknown study folder"):
        find_study_folders(tmp_path, ["harmful-s"])


def test_no_folder_for_the_chosen_tasks(tmp_path):
    save_study_folder(tmp_path / "mixedS", mix(2, 2, 2))
    with pytest.raises(DataError, match="none of the study folders.*math.*datasets/ folder"):
        find_study_folders(tmp_path, ["math"])
    with pytest.raises(DataError, match="not a directory"):
        find_study_folders(tmp_path / "nope", ["math"])


def test_a_folder_without_the_fields_is_an_error_naming_it(tmp_path):
    bad = [{"question": "q", "response": "a", "variation": "x"}]
    folder = save_study_folder(tmp_path / "grammars", {"train": bad, "test": bad})
    with pytest.raises(DataError, match=r"grammars: split 'train' lacks field\(s\) prompts"):
        load_study_folder(folder, "grammars")


def test_a_folder_without_both_splits_or_not_a_dataset(tmp_path):
    folder = save_study_folder(tmp_path / "math", {"train": rows("a", 2)})
    with pytest.raises(DataError, match=r"math: needs splits train and test \(has: \['train'\]\)"):
        load_study_folder(folder, "math")
    (tmp_path / "emotion").mkdir()
    with pytest.raises(DataError, match="emotion: not a Hugging Face save_to_disk dataset"):
        load_study_folder(tmp_path / "emotion", "emotion")


def test_a_harmful_mix_needs_harmful_rows(tmp_path):
    folder = save_study_folder(tmp_path / "mixedS", {"train": rows("x", 2), "test": rows("x", 1)})
    with pytest.raises(DataError, match=r"mixedS: a harmful mix needs 'harmful' train rows"):
        load_study_folder(folder, "harmful-s")


def test_loads_rows_in_file_order(tmp_path):
    folder = save_study_folder(tmp_path / "mixedS", mix(3, 2, 4))
    splits = load_study_folder(folder, "harmful-s")
    assert [e.label for e in splits["train"]] == ["harmful"] * 3 + ["benign"] * 2
    assert splits["test"][0] == Example("harmful prompt 1000", "answer 1000", "harmful")


def examples(counts: dict[str, int]) -> list[Example]:
    return [Example(f"{label} {i}", "r", label) for label, n in counts.items() for i in range(n)]


def test_subsample_keeps_class_balance_file_order_and_is_seeded():
    data = examples({"a": 10, "b": 10, "c": 3})
    picked = subsample(data, 4, "s1")
    assert Counter(e.label for e in picked) == {"a": 4, "b": 4, "c": 3}
    assert picked == sorted(picked, key=data.index)
    assert subsample(data, 4, "s1") == picked
    assert subsample(data, 4, "s2") != picked
    assert subsample(data, None, "s1") == data
    assert Counter(e.label for e in subsample(data, 2, "s", keep=("a",))) == {
        "a": 10,
        "b": 2,
        "c": 2,
    }


def test_harmful_train_rows_are_all_kept():
    splits = {
        "train": examples({"harmful": 20, "benign": 230}),
        "test": examples({"harmful": 250}),
    }
    sizes = study_sizes("harmful-m", "paper")
    assert sizes == {"n_benign_train": 100, "n_harmful_test": 100}
    out = subsample_task("harmful-m", splits, sizes, seed=1)
    assert Counter(e.label for e in out["train"]) == {"harmful": 20, "benign": 100}
    assert len(out["test"]) == 100
    # the medium rule drops nothing from a folder already that small, and harmful-l keeps all
    small = {"train": examples({"harmful": 20, "benign": 90}), "test": examples({"harmful": 80})}
    assert subsample_task("harmful-m", small, sizes, seed=1) == small
    assert subsample_task("harmful-l", splits, study_sizes("harmful-l", "paper"), 1) == splits


def test_study_cpu_sizes_and_overrides():
    assert study_sizes("grammars", "study-cpu") == {"n_train_per_class": 8, "n_test_per_class": 2}
    assert study_sizes("grammars", "paper") == {"n_train_per_class": None, "n_test_per_class": None}
    assert study_sizes("harmful-s", "study-cpu", {"n_harmful_test": 3}) == {
        "n_benign_train": 20,
        "n_harmful_test": 3,
    }
    with pytest.raises(ConfigError, match="study task 'grammars' has no size 'n_benign_train'"):
        study_sizes("grammars", "study-cpu", {"n_benign_train": 3})
    with pytest.raises(ConfigError, match="must be >= 1"):
        study_sizes("math", "study-cpu", {"n_train_per_class": 0})
    with pytest.raises(ConfigError, match="unknown preset 'quick' for --data-dir"):
        study_sizes("math", "quick")


def test_study_cpu_sizes_are_the_quick_builder_sizes():
    """So a study grid and a builder grid at CPU size compare row for row."""
    from attriblm.data.tasks import PRESETS

    for task, sizes in STUDY_PRESETS["study-cpu"].items():
        quick = {k: v for k, v in PRESETS[task]["quick"].items() if k != "n_harmful_train"}
        assert sizes == quick, task
