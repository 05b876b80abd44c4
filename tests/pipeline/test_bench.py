from __future__ import annotations

import csv

import pytest

from attriblm.errors import ConfigError
from attriblm.io import read_json
from attriblm.pipeline.bench import run_bench

# The grid of the shared `bench_dir` fixture (tests/pipeline/conftest.py).
SIZES = {
    "grammars": {"n_train_per_class": 2, "n_test_per_class": 1},
    "harmful-s": {"n_harmful_train": 4, "n_benign_train": 4, "n_harmful_test": 3},
}
BENCH_METHODS = ("gradsim", "repsim", "lissa-paper", "exact")


def test_fixture_grid_is_the_one_these_tests_assume(bench_dir):
    grid = read_json(bench_dir / "bench.json")["grid"]
    assert grid["task_sizes"] == SIZES and grid["methods"] == list(BENCH_METHODS)


def _csv(path):
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_bench_writes_grid_tables_and_plot(bench_dir):
    rows = _csv(bench_dir / "results.csv")
    assert len(rows) == 2 * 2 * len(BENCH_METHODS)  # tasks × loss masks × methods
    assert {(r["task"], r["loss_mask"]) for r in rows} == {
        (t, m) for t in SIZES for m in ("response", "paper")
    }
    for task in SIZES:
        for mask in ("response", "paper"):
            report = read_json(bench_dir / task / mask / "metrics.json")
            assert set(report["methods"]) == set(BENCH_METHODS)
    markdown = (bench_dir / "results.md").read_text()
    assert "### loss mask: response" in markdown and "### loss mask: paper" in markdown
    header = next(line for line in markdown.splitlines() if line.startswith("| method"))
    assert "| grammars Acc | grammars Cover | grammars AUPRC | harmful-s Acc |" in header
    assert (bench_dir / "results.png").stat().st_size > 10_000


def test_harmful_tasks_report_both_cover_rules(bench_dir):
    rows = [r for r in _csv(bench_dir / "results.csv") if r["task"] == "harmful-s"]
    assert all(r["cover_n_harmful"] not in ("", None) for r in rows)
    report = read_json(bench_dir / "harmful-s" / "response" / "metrics.json")
    assert report["methods"]["exact"]["cover@n_harmful"]["k"] == 4
    assert "Cover@n_harmful" in (bench_dir / "results.md").read_text()


def test_rerun_comes_from_cache_with_identical_results(bench_dir):
    before = (bench_dir / "results.csv").read_text()
    finetunes = sorted(p.name for p in (bench_dir / "cache" / "finetune").iterdir())
    stamps = {p: p.stat().st_mtime_ns for p in (bench_dir / "cache").rglob("*.safetensors")}
    run_bench(
        bench_dir,
        tasks=list(SIZES),
        methods=list(BENCH_METHODS),
        model="tiny",
        epochs=1,
        task_sizes=SIZES,
    )
    assert (bench_dir / "results.csv").read_text() == before
    history = read_json(bench_dir / "bench.json")["history"]
    assert history[-1]["computed"] == {"finetunes": 0, "runs": 0}
    assert history[0]["computed"] == {"finetunes": 4, "runs": 4}
    assert sorted(p.name for p in (bench_dir / "cache" / "finetune").iterdir()) == finetunes
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_unknown_task_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="--tasks"):
        run_bench(tmp_path, tasks=["nope"], model="tiny")


def test_an_interrupted_finetune_is_not_taken_from_the_cache(bench_dir):
    """A fine-tune killed after some epochs has train_log.json but no final adapter."""
    import shutil

    victim = sorted((bench_dir / "cache" / "finetune").iterdir())[0]
    shutil.rmtree(victim / "adapter")
    before = (bench_dir / "results.csv").read_text()
    run_bench(
        bench_dir,
        tasks=list(SIZES),
        methods=list(BENCH_METHODS),
        model="tiny",
        epochs=1,
        task_sizes=SIZES,
    )
    assert (victim / "adapter" / "adapter_model.safetensors").is_file()
    assert read_json(bench_dir / "bench.json")["history"][-1]["computed"]["finetunes"] == 1
    assert (bench_dir / "results.csv").read_text() == before


def _cached_copy(bench_dir, tmp_path):
    """An empty bench directory holding ``bench_dir``'s cache (so no task is recomputed)."""
    import shutil

    out = tmp_path / "parts"
    out.mkdir()
    shutil.copytree(bench_dir / "cache", out / "cache")
    shutil.copy(bench_dir / ".attriblm-output", out)  # the marker of a bench directory
    return out


def _part(out, tasks, methods=BENCH_METHODS):
    sizes = {task: SIZES[task] for task in tasks}
    return run_bench(
        out, tasks=tasks, methods=list(methods), model="tiny", epochs=1, task_sizes=sizes
    )


def _row_set(path):
    return {tuple(sorted(row.items())) for row in _csv(path)}


def test_a_grid_built_in_parts_equals_the_grid_built_at_once(bench_dir, tmp_path):
    out = _cached_copy(bench_dir, tmp_path)
    _part(out, ["grammars"])
    assert {r["task"] for r in _csv(out / "results.csv")} == {"grammars"}
    _part(out, ["harmful-s"])
    assert _row_set(out / "results.csv") == _row_set(bench_dir / "results.csv")
    record = read_json(out / "bench.json")
    assert record["grid"]["tasks"] == ["harmful-s", "grammars"]  # the bench's task order
    assert record["grid"]["task_sizes"] == SIZES
    assert set(record["grid"]["data"]) == set(SIZES)
    assert [h["tasks"] for h in record["history"]] == [["grammars"], ["harmful-s"]]
    assert "| grammars Acc |" in (out / "results.md").read_text()


def test_other_grid_settings_start_a_new_grid(bench_dir, tmp_path):
    from attriblm.pipeline.bench_layout import BenchDir

    out = _cached_copy(bench_dir, tmp_path)
    _part(out, ["grammars"])
    _part(out, ["harmful-s"], methods=("gradsim", "repsim"))  # other methods: another grid
    assert {r["task"] for r in _csv(out / "results.csv")} == {"harmful-s"}
    record = read_json(out / "bench.json")
    assert record["grid"]["tasks"] == ["harmful-s"] and len(record["history"]) == 1
    # grammars' metrics.json is still on disk but is not this grid's
    assert (out / "grammars" / "response" / "metrics.json").is_file()
    assert {p.parent.parent.name for p in BenchDir(out).metrics_files()} == {"harmful-s"}
