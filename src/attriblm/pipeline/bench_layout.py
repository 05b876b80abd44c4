"""The layout of a ``bench`` output directory, owned in one place (docs/DESIGN.md §2).

::

    bench.json                        the grid's settings and tasks, and each invocation's tasks,
                                      wall time and computed counts
    results.csv, results.md, results.png
    <task>/data/<split>.jsonl         the rows a task used
    <task>/<loss_mask>/metrics.json   ``evaluate``'s report plus task, loss mask, fine-tune, data
    cache/finetune/<key>/             cached fine-tunes (by content key)
    cache/runs/<key>/                 cached attribution runs: run directories (:class:`RunDir`)

A ``metrics.json`` records the absolute path of its run; :meth:`BenchDir.run_of` finds the run
also when the bench directory was moved or copied (by its key under ``cache/runs``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from attriblm.io import read_json
from attriblm.rundir import RunDir


class BenchDir:
    """A bench directory's paths (module docstring); nothing is read on construction."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"BenchDir({str(self.path)!r})"

    @property
    def bench_json(self) -> Path:
        return self.path / "bench.json"

    @property
    def results_csv(self) -> Path:
        return self.path / "results.csv"

    @property
    def results_md(self) -> Path:
        return self.path / "results.md"

    @property
    def results_png(self) -> Path:
        return self.path / "results.png"

    @property
    def cache(self) -> Path:
        return self.path / "cache"

    def finetune_cache(self, key: str) -> Path:
        """``cache/finetune/<key>``: a cached fine-tune directory."""
        return self.cache / "finetune" / key

    def run_cache(self, key: str) -> RunDir:
        """``cache/runs/<key>``: a cached attribution run."""
        return RunDir(self.cache / "runs" / key)

    def task_data(self, task: str) -> Path:
        """``<task>/data``: the rows the task used (one ``<split>.jsonl`` per split)."""
        return self.path / task / "data"

    def metrics_json(self, task: str, loss_mask: str) -> Path:
        return self.path / task / loss_mask / "metrics.json"

    def metrics_files(self) -> list[Path]:
        """The grid's ``<task>/<loss_mask>/metrics.json`` (``bench.json``'s tasks × loss masks,
        those present), sorted; every one found when there is no ``bench.json``. Files of tasks
        an earlier, different grid left behind are not the grid's and are not listed."""
        found = sorted(self.path.glob("*/*/metrics.json"))
        if not self.bench_json.is_file():
            return found
        grid = read_json(self.bench_json).get("grid", {})
        wanted = {
            self.metrics_json(task, mask)
            for task in grid.get("tasks", [])
            for mask in grid.get("loss_masks", [])
        }
        return [path for path in found if path in wanted]

    def run_of(self, report: dict[str, Any]) -> RunDir:
        """The cached run a ``metrics.json`` report names (``report["run"]``), in this bench."""
        return self.run_cache(Path(report["run"]).name)

    def finetune_of(self, report: dict[str, Any]) -> Path:
        """The cached fine-tune a ``metrics.json`` report names (``report["finetune"]``)."""
        return self.finetune_cache(Path(report["finetune"]).name)

    def find_run(self, recorded: str | None) -> RunDir | None:
        """The run directory a report records: as recorded, relative to the bench, or by its
        key under ``cache/runs`` (a moved bench); ``None`` when none is a run."""
        if not recorded:
            return None
        candidates = [
            Path(recorded),
            self.path / recorded,
            self.run_cache(Path(recorded).name).path,
        ]
        return next((RunDir(c) for c in candidates if RunDir(c).is_run()), None)
