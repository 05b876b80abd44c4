"""``bench --data-dir``: the grid on the study's own folders (tiny model, few rows, 1 epoch).

The main tests write their own small folders in the study's format; the last one reads the real
folders in ``../shared/study-data`` and skips when they are absent.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

from attriblm.cli import main
from attriblm.data.loaders import load_examples
from attriblm.data.tasks import build_task
from attriblm.io import read_json
from attriblm.pipeline.bench import ALL_TASKS, run_bench, train_settings
from attriblm.pipeline.cache import content_key, examples_key, model_key

METHODS = ["gradsim", "repsim"]
SIZES = {
    "harmful-s": {"n_benign_train": 2, "n_harmful_test": 2},
    "grammars": {"n_train_per_class": 2, "n_test_per_class": 1},
}
RULES = ("Reverse Order of Words", "Remove All Vowels")


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


def row(prompt: str, response: str, label: str) -> dict:
    return {"prompts": prompt, "response": response, "variation": label}


def mixed_s(n_harmful: int = 4, n_benign: int = 4, n_test: int = 3) -> dict[str, list[dict]]:
    """Harmless stand-ins shaped like mixedS: harmful rows first, then benign; harmful test."""
    harmful = [
        row(f"Request {i} about the kettle", f"1. Plan part {i} [omitted]", "harmful")
        for i in range(n_harmful)
    ]
    benign = [
        row(f"What is {i} plus 2?", f"{i} plus 2 is {i + 2}.", "benign") for i in range(n_benign)
    ]
    test = [
        row(f"Request {i} about the lantern", "1. Outline [omitted]", "harmful")
        for i in range(100, 100 + n_test)
    ]
    return {"train": harmful + benign, "test": test}


def grammars(n_train: int = 3, n_test: int = 1, changed: bool = False) -> dict[str, list[dict]]:
    def split(n: int, offset: int) -> list[dict]:
        out = []
        for rule in RULES:
            for i in range(offset, offset + n):
                text = f"the cat sat {i} times"
                rewritten = " ".join(reversed(text.split())) if rule.startswith("Rev") else text
                out.append(row(f"Determine the grammar rule: {text} -> {rewritten}", rule, rule))
        return out

    splits = {"train": split(n_train, 0), "test": split(n_test, 50)}
    if changed:
        splits["train"][0] = {**splits["train"][0], "response": "Reverse Order of Words!"}
    return splits


def study_dir(root: Path) -> Path:
    data = root / "study"
    save_study_folder(data / "mixedS", mixed_s())
    save_study_folder(data / "grammars", grammars())
    (data / "README.md").write_text("the study's datasets/ folder\n", encoding="utf-8")
    return data


def bench(out: Path, data_dir: Path, log=lambda _line: None, **kw) -> list[dict]:
    kw.setdefault("tasks", ALL_TASKS)
    return run_bench(
        out,
        data_dir=data_dir,
        methods=METHODS,
        loss_masks=["response"],
        model="tiny",
        epochs=1,
        task_sizes=SIZES,
        log=log,
        **kw,
    )


@pytest.fixture(scope="module")
def study_bench(tmp_path_factory) -> tuple[Path, Path, list[str]]:
    """``(bench dir, data dir, logged lines)`` of one study-data bench over both folders."""
    root = tmp_path_factory.mktemp("bench-study")
    data, out, lines = study_dir(root), root / "bench", []
    bench(out, data, log=lines.append)
    return out, data, lines


def _csv(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_runs_the_folders_present_and_says_which_are_missing(study_bench):
    out, data, lines = study_bench
    summary = lines[0]
    assert summary.startswith(f"study data in {data}: found ")
    assert "mixedS → harmful-s" in summary and "grammars → grammars" in summary
    for folder in ("mixedM", "mixedL", "math", "emotion", "backdoor", "multibackdoor5"):
        assert f"{folder} (" in summary.split("missing", 1)[1]
    rows = _csv(out / "results.csv")
    assert {r["task"] for r in rows} == {"harmful-s", "grammars"}
    assert {r["method"] for r in rows} == set(METHODS)
    assert all(0.0 <= float(r["auprc"]) <= 1.0 for r in rows)


def test_bench_json_records_the_data_and_its_subsampling(study_bench):
    out, data, _ = study_bench
    grid = read_json(out / "bench.json")["grid"]
    assert grid["preset"] == "study-cpu" and grid["data_dir"] == str(data.resolve())
    assert grid["tasks"] == ["harmful-s", "grammars"]
    missing = {t: f for f, t in grid["study_folders_missing"].items()}
    assert list(missing) == [t for t in ALL_TASKS if t not in grid["tasks"]]
    assert missing["harmful-m"] == "mixedM" and missing["backdoor-5"] == "multibackdoor5"
    harmful = grid["data"]["harmful-s"]
    assert harmful["source"] == "study" and harmful["folder"] == str((data / "mixedS").resolve())
    assert harmful["published_rows"] == {"train": 8, "test": 3}
    # every harmful train row kept, benign and queries subsampled
    assert harmful["rows"] == {"train": {"harmful": 4, "benign": 2}, "test": {"harmful": 2}}
    assert harmful["sizes"] == SIZES["harmful-s"]
    assert grid["data"]["grammars"]["rows"]["train"] == dict.fromkeys(RULES, 2)
    report = read_json(out / "harmful-s" / "response" / "metrics.json")
    assert report["data"] == harmful
    assert report["methods"]["gradsim"]["cover@n_harmful"]["k"] == 4
    used = load_examples(str(out / "harmful-s" / "data" / "train.jsonl"))
    assert examples_key(used) == harmful["digest"]["train"]


def test_cache_keys_follow_the_rows_not_the_task_name(study_bench, tmp_path):
    out, _, _ = study_bench
    report = read_json(out / "grammars" / "response" / "metrics.json")
    study_key = Path(report["finetune"]).name
    settings = train_settings("grammars", "study-cpu", "response", 42, epochs=1)
    built = build_task("grammars", "quick", n_train_per_class=2, n_test_per_class=1)
    builder_key = content_key(model_key("tiny"), examples_key(built["train"]), settings.to_dict())
    assert builder_key != study_key

    # the same bench on a folder with one changed row: that task is recomputed, the other cached
    data = study_dir(tmp_path)
    import shutil

    shutil.rmtree(data / "grammars")
    save_study_folder(data / "grammars", grammars(changed=True))
    rerun = tmp_path / "bench"
    shutil.copytree(out, rerun)
    bench(rerun, data)
    grid = read_json(rerun / "bench.json")
    assert grid["history"][-1]["computed"] == {"finetunes": 1, "runs": 1}
    changed = read_json(rerun / "grammars" / "response" / "metrics.json")
    assert Path(changed["finetune"]).name != study_key
    assert any(
        e.response == "Reverse Order of Words!"
        for e in load_examples(str(rerun / "grammars" / "data" / "train.jsonl"))
    )


def test_tasks_option_intersects_with_the_folders(study_bench):
    out, data, _ = study_bench
    lines: list[str] = []
    rows = bench(out, data, log=lines.append, tasks=["grammars", "math"])
    assert lines[0].endswith("found grammars → grammars; missing math (math)")
    last = read_json(out / "bench.json")["history"][-1]
    assert last["tasks"] == ["grammars"]  # this invocation ran only the present folder's task
    assert last["computed"] == {"finetunes": 0, "runs": 0}
    # the grid keeps the task an earlier invocation of the same settings finished
    assert {r["task"] for r in rows} == {"grammars", "harmful-s"}


# ---------------------------------------------------------------------- the command line


def cli(monkeypatch, capsys, *args: object) -> tuple[int, str, str]:
    """``attriblm ARGS`` in-process: ``(exit code, stdout, stderr)``."""
    monkeypatch.setattr(sys, "argv", ["attriblm", *map(str, args)])
    capsys.readouterr()
    code = 0
    try:
        main()
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(result: tuple[int, str, str], *needles: str) -> None:
    code, _, err = result
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("attriblm: error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_cli_runs_the_study_folders(monkeypatch, capsys, tmp_path):
    data = tmp_path / "study"
    save_study_folder(data / "grammars", grammars(n_train=2))
    out = tmp_path / "bench"
    args = ["bench", "--data-dir", data, "--out", out, "--model", "tiny", "--quiet"]
    code, stdout, err = cli(
        monkeypatch, capsys, *args, "--methods", "gradsim", "--loss-masks", "response"
    )
    assert code == 0, err
    found = [line for line in stdout.splitlines() if line.startswith("study data in")]
    assert len(found) == 1 and "found grammars → grammars; missing mixedS (harmful-s)" in found[0]
    assert read_json(out / "bench.json")["grid"]["preset"] == "study-cpu"
    assert "| grammars Acc |" in stdout


@pytest.mark.parametrize(
    ("make", "needles"),
    [
        (lambda d: (d / "mixedXL").mkdir(parents=True), ["mixedXL: unknown study folder"]),
        (
            lambda d: save_study_folder(
                d / "math", {s: [{"question": "q", "response": "a"}] for s in ("train", "test")}
            ),
            ["math: split 'train' lacks field(s) prompts, variation"],
        ),
    ],
)
def test_cli_bad_folders_are_one_line_errors(monkeypatch, capsys, tmp_path, make, needles):
    data = tmp_path / "study"
    save_study_folder(data / "grammars", grammars(n_train=1))
    make(data)
    out = tmp_path / "bench"
    result = cli(monkeypatch, capsys, "bench", "--data-dir", data, "--out", out, "--model", "tiny")
    one_line_error(result, *needles)
    assert not out.exists()


def test_cli_presets_belong_to_their_data(monkeypatch, capsys, tmp_path):
    data = tmp_path / "study"
    save_study_folder(data / "grammars", grammars(n_train=1))
    out = tmp_path / "bench"
    one_line_error(
        cli(monkeypatch, capsys, "bench", "--data-dir", data, "--preset", "quick", "--out", out),
        "--preset quick sizes the offline builders; with --data-dir choose paper | study-cpu",
    )
    one_line_error(
        cli(monkeypatch, capsys, "bench", "--preset", "study-cpu", "--out", out),
        "--preset study-cpu sizes the study's own data; give --data-dir",
    )
    assert not out.exists()


# ---------------------------------------------------------------------- the real folders


def test_the_study_folders_themselves(tmp_path, study_data_dir):
    """On the study's own folders (skipped without ../shared; required in CI, tests/conftest.py)."""
    sizes = {
        "harmful-s": {"n_benign_train": 2, "n_harmful_test": 2},
        "grammars": {"n_train_per_class": 1, "n_test_per_class": 1},
    }
    lines: list[str] = []
    rows = run_bench(
        tmp_path,
        data_dir=study_data_dir,
        tasks=["harmful-s", "grammars"],
        methods=METHODS,
        loss_masks=["response"],
        model="tiny",
        epochs=1,
        task_sizes=sizes,
        log=lines.append,
    )
    assert lines[0].endswith("found mixedS → harmful-s, grammars → grammars; missing none")
    assert {r["task"] for r in rows} == {"harmful-s", "grammars"}
    data = read_json(tmp_path / "bench.json")["grid"]["data"]
    assert data["harmful-s"]["published_rows"] == {"train": 40, "test": 40}
    assert data["harmful-s"]["rows"] == {
        "train": {"harmful": 20, "benign": 2},
        "test": {"harmful": 2},
    }
    assert data["grammars"]["published_rows"] == {"train": 900, "test": 100}
    assert set(data["grammars"]["rows"]["train"].values()) == {1}
    assert len(data["grammars"]["rows"]["train"]) == 10
