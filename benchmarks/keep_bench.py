"""Copy what docs/RESULTS.md is made of out of a finished bench, small enough to commit.

Usage:
    python benchmarks/keep_bench.py BENCH_DIR RECORD_DIR
    python benchmarks/keep_bench.py --traces TRACES_DIR RECORD_DIR   # benchmarks/run_traces.sh OUT

A bench directory holds gigabytes of cache (gradient stores, adapters, checkpoints, factors);
write_results_md.py reads only a few kilobytes of it per task: ``bench.json``, ``results.*``,
each ``<task>/<loss_mask>/metrics.json``, and of the runs and fine-tunes those name,
``run.json``, ``config.yaml``, the score files, the rows' labels and ``train_log.json``. This
copies exactly those into RECORD_DIR (replacing an earlier record there), so that a grid can be
built over several sessions: copy the record to a working bench, run ``attriblm bench --tasks``
for the tasks still missing (the grid keeps the earlier tasks, attriblm.pipeline.bench.
merge_earlier_tasks), keep the result again.

The rows' texts are not kept (``data/*.jsonl`` keep only ``label``): the study's harmful rows are
not republished, and a task's rows are rebuilt by ``attriblm build`` or read from the study's
folders. A record is not a cache: a task rerun into it is fine-tuned again (its adapter is not
kept) and its cached scores are reused.

With ``--traces``, the same for the output of benchmarks/run_traces.sh: ``timings.jsonl`` and each
``<task>/trace`` run, its ``generations.jsonl`` with the verdicts (``index``, ``kept``,
``query``) and the prompt and generation texts emptied (the backdoor's prompts are AdvBench
requests, which attriblm does not store).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from attriblm.io import read_json, staged_directory, write_jsonl
from attriblm.outputs import MARKER
from attriblm.pipeline.bench_layout import BenchDir
from attriblm.rundir import ROLES, RunDir, read_jsonl

BENCH_FILES = ("bench.json", "results.csv", "results.md", "results.png", MARKER)
RUN_FILES = ("run.json", "config.yaml", "metrics.json", MARKER)


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, target)


def _labels_only(source: Path, target: Path) -> None:
    """``source``'s jsonl rows reduced to ``{"label": ...}``, one per line, in order."""
    write_jsonl(target, ({"label": row.get("label")} for row in read_jsonl(source)))


def _keep_run(run: RunDir, target: RunDir) -> None:
    for name in RUN_FILES:
        if (run.path / name).is_file():
            _copy(run.path / name, target.path / name)
    for score_file in sorted(run.scores_dir.glob("*.safetensors")):
        _copy(score_file, target.scores_dir / score_file.name)
    for role in ROLES:
        if run.data_file(role).is_file():
            _labels_only(run.data_file(role), target.data_file(role))


def keep_bench(bench_dir: Path, record_dir: Path) -> list[Path]:
    """Write the record of ``bench_dir`` to ``record_dir`` (atomically replaced); returns the
    metrics files kept."""
    bench = BenchDir(bench_dir)
    kept = []
    with staged_directory(record_dir) as staging:
        record = BenchDir(staging)
        for name in BENCH_FILES:
            if (bench.path / name).is_file():
                _copy(bench.path / name, record.path / name)
        for metrics_path in bench.metrics_files():
            report = read_json(metrics_path)
            _copy(metrics_path, record.path / metrics_path.relative_to(bench.path))
            run = bench.run_of(report)
            _keep_run(run, record.run_cache(run.path.name))
            finetune = bench.finetune_of(report)
            log = finetune / "train_log.json"
            _copy(log, record.finetune_cache(finetune.name) / "train_log.json")
            kept.append(metrics_path.relative_to(bench.path))
    return kept


def _verdicts_only(source: Path, target: Path) -> None:
    """``generations.jsonl`` with the texts emptied and the verdicts kept."""
    write_jsonl(target, ({**row, "prompt": "", "generation": ""} for row in read_jsonl(source)))


def keep_traces(traces_dir: Path, record_dir: Path) -> list[str]:
    """Write the record of a run_traces.sh output (module docstring); returns the tasks kept."""
    kept = []
    with staged_directory(record_dir) as staging:
        _copy(traces_dir / "timings.jsonl", staging / "timings.jsonl")
        for run_json in sorted(traces_dir.glob("*/trace/run.json")):
            run, task = RunDir(run_json.parent), run_json.parent.parent.name
            target = RunDir(staging / task / "trace")
            _keep_run(run, target)
            _verdicts_only(run.generations, target.generations)
            kept.append(task)
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", action="store_true", help="SOURCE is a run_traces.sh OUT")
    parser.add_argument("source", type=Path, help="a bench directory (or traces with --traces)")
    parser.add_argument("record_dir", type=Path)
    args = parser.parse_args()
    if args.traces:
        what = f"traces of {', '.join(keep_traces(args.source, args.record_dir))}"
    else:
        what = f"{len(keep_bench(args.source, args.record_dir))} task × loss mask results"
    size = sum(p.stat().st_size for p in args.record_dir.rglob("*") if p.is_file())
    print(f"kept {what} in {args.record_dir} ({size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
