"""`attriblm bench`: the study's evaluation grid (tasks × methods × loss masks), cached by content.

For each task and loss mask: build the task, fine-tune (the study's recipe at the ``paper``
preset; fewer epochs and a larger learning rate at ``quick``), attribute every query with every
method, evaluate. Fine-tunes and attribution runs are stored under ``OUT/cache/`` by content key
(model, data, settings), so a rerun skips them and yields the same table.

With ``data_dir`` the tasks come from the study's own published folders instead of the offline
builders (:mod:`attriblm.data.study`): the tasks run are those whose folder is present, and the
presets are ``study-cpu`` (subsampled, CPU recipe) and ``paper`` (the published data and the
study's recipe). Cache keys hash every row of the data (``examples_key``), so builder data and
study data never share a cached fine-tune or run; ``bench.json`` and each ``metrics.json``
record where each task's data came from and its digest.

A grid can be built in parts: an invocation into an ``OUT`` whose ``bench.json`` has the same
grid settings keeps the tasks finished earlier in its tables (:func:`merge_earlier_tasks`).

Outputs: ``OUT/<task>/data`` (the rows used), ``OUT/<task>/<loss_mask>/metrics.json``,
``OUT/results.csv``, ``OUT/results.md`` (rows = methods, columns = task × {Acc, Cover, AUPRC},
one table per loss mask), ``OUT/results.png``.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from attriblm.data import study
from attriblm.data.loaders import load_examples
from attriblm.data.schema import Example
from attriblm.data.tasks import PRESETS, build_task
from attriblm.data.tokenize import loss_mask_identity
from attriblm.data.writers import write_dataset
from attriblm.errors import ConfigError
from attriblm.io import read_json, write_json, write_text
from attriblm.methods.registry import expand_method_names
from attriblm.models.loading import load_model
from attriblm.outputs import BENCH, claim_output_dir
from attriblm.pipeline.attribute import AttributeSettings, attribute
from attriblm.pipeline.bench_layout import BenchDir
from attriblm.pipeline.cache import content_key, examples_key, model_key
from attriblm.pipeline.evaluate import evaluate_run
from attriblm.progress import StageProgress, no_progress, step_callback
from attriblm.train.finetune import TrainSettings, finetune

ALL_TASKS = (
    "harmful-s",
    "harmful-m",
    "harmful-l",
    "grammars",
    "math",
    "emotion",
    "backdoor-1",
    "backdoor-3",
    "backdoor-5",
)
BENCH_LOSS_MASKS = ("response", "paper")
TABLE_METRICS = (("Acc", "acc"), ("Cover", "cover"), ("AUPRC", "auprc"))


@dataclass(frozen=True)
class Recipe:
    """Fine-tuning recipe of a preset; ``harmful_epochs`` applies to the harmful mixes."""

    epochs: int
    harmful_epochs: int
    lr: float
    batch_size: int


RECIPES = {
    # The study: AdamW, lr 5e-5, batch 24, 50 epochs on harmful mixes and 10 on the others.
    "paper": Recipe(epochs=10, harmful_epochs=50, lr=5e-5, batch_size=24),
    # CPU-sized: far fewer optimiser steps, so a 10× learning rate; not the study's recipe.
    # 3 epochs keep the whole grid (18 fine-tunes, 3 gradient passes each for TracIn) within
    # 150 minutes on 2 CPU cores.
    "quick": Recipe(epochs=3, harmful_epochs=3, lr=1e-3, batch_size=8),
    # The study's data subsampled to the quick sizes (attriblm.data.study), with the quick
    # recipe, so the two grids differ only in the data; not the study's recipe either.
    "study-cpu": Recipe(epochs=3, harmful_epochs=3, lr=1e-3, batch_size=8),
}
BUILDER_PRESETS = ("quick", "paper")


def train_settings(
    task: str, preset: str, loss_mask: str, seed: int, epochs: int | None = None
) -> TrainSettings:
    """The preset's fine-tuning settings for ``task`` (``epochs`` overrides the recipe's)."""
    recipe = RECIPES[preset]
    if epochs is None:
        epochs = recipe.harmful_epochs if task.startswith("harmful") else recipe.epochs
    return TrainSettings(
        epochs=epochs, lr=recipe.lr, batch_size=recipe.batch_size, seed=seed, loss_mask=loss_mask
    )


def resolve_preset(preset: str | None, data_dir: Path | str | None) -> str:
    """``preset``, defaulting to ``quick`` (builders) or ``study-cpu`` (with ``data_dir``)."""
    if preset is None:
        return "quick" if data_dir is None else "study-cpu"
    if preset not in RECIPES:
        raise ConfigError(f"unknown preset {preset!r} (--preset); choose {', '.join(RECIPES)}")
    if data_dir is None and preset not in BUILDER_PRESETS:
        raise ConfigError(
            f"--preset {preset} sizes the study's own data; give --data-dir, or choose "
            f"{' | '.join(BUILDER_PRESETS)} for the offline builders"
        )
    if data_dir is not None and preset not in study.STUDY_PRESETS:
        raise ConfigError(
            f"--preset {preset} sizes the offline builders; with --data-dir choose "
            f"{' | '.join(study.STUDY_PRESETS)}"
        )
    return preset


def _check(tasks: Sequence[str], loss_masks: Sequence[str]) -> None:
    for task in tasks:
        if task not in PRESETS:
            raise ConfigError(f"unknown task {task!r} (--tasks); choose {', '.join(PRESETS)}")
    for mask in loss_masks:
        if mask not in ("response", "full", "paper"):
            raise ConfigError(f"unknown loss mask {mask!r} (--loss-masks)")


def _finetuned(
    model: str, train, settings: TrainSettings, bench: BenchDir, source: str, progress, computed
):
    identity = loss_mask_identity(settings.loss_mask)
    revision = [identity] if identity != settings.loss_mask else []  # other masks: keys unchanged
    key = content_key(model_key(model), examples_key(train), settings.to_dict(), *revision)
    out = bench.finetune_cache(key)
    # The final adapter is saved (atomically) after the last epoch: its presence means complete;
    # train_log.json alone does not (it is rewritten after every epoch).
    if not (out / "adapter" / "adapter_model.safetensors").is_file():
        computed["finetunes"] += 1
        finetune(
            load_model(model),
            train,
            settings,
            out,
            data_source=source,
            progress=step_callback(progress, f"fine-tuning · {source}"),
        )
    return key, out


# Settings that never change scores (where features are kept), and storage settings whose default
# is the plain full-precision path; left out of run keys so caches survive versions adding them.
_NOT_IN_RUN_KEY = ("store", "keep_store")
_NEUTRAL_DEFAULTS = {
    "store_dtype": "fp32",
    "proj_dim": None,
    "proj_kind": "gaussian",
    "proj_seed": 0,
    "options": {},  # no method options: each method's defaults
}


def run_key_settings(settings: AttributeSettings) -> dict:
    """The attribution settings that decide a cached run's numbers (its cache-key part)."""
    values = asdict(settings)
    for name in _NOT_IN_RUN_KEY:
        values.pop(name, None)
    if values.get("proj_dim") is None:
        for name in ("proj_kind", "proj_seed"):
            values.pop(name, None)
    for name, default in _NEUTRAL_DEFAULTS.items():
        if name in values and values[name] == default:
            values.pop(name)
    return values


def _attributed(
    model, ft_key, ft_dir, splits, settings: AttributeSettings, bench, source, progress, computed
):
    key = content_key(ft_key, examples_key(splits["test"]), run_key_settings(settings))
    run = bench.run_cache(key)
    run_dir = run.path
    if not run.run_json.is_file():
        computed["runs"] += 1
        attribute(
            load_model(model, adapter=ft_dir / "adapter"),
            splits["train"],
            splits["test"],
            settings,
            run_dir,
            sources={"train": f"{source}:train", "queries": f"{source}:test"},
            progress=progress,
        )
    return run_dir


def _extra_k(task: str, train) -> dict[str, int] | None:
    """Harmful mixes also report Cover with k = number of harmful train rows (docs/DESIGN.md §4)."""
    if not task.startswith("harmful"):
        return None
    return {"n_harmful": sum(e.label == "harmful" for e in train)}


@dataclass(frozen=True)
class TaskData:
    """One task's rows and where they came from (``record`` goes into bench.json and metrics)."""

    splits: dict[str, list[Example]]
    source: str
    record: dict


def _data_record(splits: dict[str, list[Example]], **fields) -> dict:
    """Where the data came from, its digest per split (the cache keys' data part), label counts."""
    return {
        **fields,
        "digest": {name: examples_key(rows) for name, rows in splits.items()},
        "rows": {name: study.label_counts(rows) for name, rows in splits.items()},
    }


def builder_data(
    tasks: Sequence[str], preset: str, seed: int, task_sizes: dict | None
) -> dict[str, TaskData]:
    """Every task built offline at ``preset`` sizes (``task_sizes`` overriding)."""
    data = {}
    for task in tasks:
        splits = build_task(task, preset=preset, seed=seed, **(task_sizes or {}).get(task, {}))
        data[task] = TaskData(splits, task, _data_record(splits, source="builder", task=task))
    return data


def study_data(
    data_dir: Path | str,
    tasks: Sequence[str],
    preset: str,
    seed: int,
    task_sizes: dict | None,
    log: Callable[[str], None],
) -> dict[str, TaskData]:
    """The tasks whose study folder ``data_dir`` holds, loaded and subsampled to ``preset``.

    Logs one line naming the folders found and missing. Every folder is read and checked before
    anything is trained, so a malformed one stops the bench with nothing computed.
    """
    folders = study.find_study_folders(data_dir, list(tasks))
    log(folders.summary())
    data = {}
    for task, folder in folders.found.items():
        sizes = study.study_sizes(task, preset, (task_sizes or {}).get(task))
        published = study.load_study_folder(folder, task)
        splits = study.subsample_task(task, published, sizes, seed)
        record = _data_record(
            splits,
            source="study",
            folder=str(folder.resolve()),
            published_rows={name: len(rows) for name, rows in published.items()},
            published_digest={name: examples_key(rows) for name, rows in published.items()},
            sizes=sizes,
        )
        data[task] = TaskData(splits, str(folder), record)
    return data


def _write_task_data(splits: dict[str, list[Example]], path: Path) -> None:
    """Write the rows used to ``path`` unless it already holds exactly these rows."""
    files = {name: path / f"{name}.jsonl" for name in splits}
    if all(f.is_file() for f in files.values()) and all(
        load_examples(str(files[name])) == rows for name, rows in splits.items()
    ):
        return
    write_dataset(splits, path, overwrite=True)  # bench's own copy of the task's rows


def run_bench(
    out_dir: Path | str,
    *,
    tasks: Sequence[str] = ALL_TASKS,
    methods: Sequence[str] = ("all",),
    preset: str | None = None,
    loss_masks: Sequence[str] = BENCH_LOSS_MASKS,
    model: str = "default",
    seed: int = 42,
    epochs: int | None = None,
    task_sizes: dict[str, dict[str, int]] | None = None,
    data_dir: Path | str | None = None,
    progress: StageProgress = no_progress,
    log: Callable[[str], None] = lambda _msg: None,
) -> list[dict]:
    """Run (or reuse from cache) the grid; write the per-task metrics and the combined tables.

    ``preset`` defaults to ``quick``, or ``study-cpu`` with ``data_dir`` (the study's folders:
    only the ``tasks`` whose folder is present run). ``epochs`` overrides the preset's epochs;
    ``task_sizes`` overrides a task's preset sizes (e.g. ``{"grammars": {"n_train_per_class":
    2}}``; study data: :mod:`attriblm.data.study`). Returns the rows of ``results.csv`` (one per
    task × loss mask × method; with the tasks an earlier invocation of the same grid settings
    finished, :func:`merge_earlier_tasks`). ``OUT/bench.json`` records the grid's settings, each
    task's data (source, digest, rows per label), with ``data_dir`` the requested tasks whose
    folder is absent (``study_folders_missing``: folder → task) and, per invocation, its tasks,
    the wall time and how many fine-tunes and runs were computed (not cached).
    """
    preset = resolve_preset(preset, data_dir)
    _check(tasks, loss_masks)
    started = time.perf_counter()
    computed = {"finetunes": 0, "runs": 0}
    out_dir = claim_output_dir(out_dir, BENCH)  # new, empty or an earlier bench's
    bench = BenchDir(out_dir)
    method_names = expand_method_names(methods)
    if data_dir is None:
        data = builder_data(tasks, preset, seed, task_sizes)
    else:
        data = study_data(data_dir, tasks, preset, seed, task_sizes, log)
    rows: list[dict] = []
    for task, task_data in data.items():
        splits, source = task_data.splits, task_data.source
        _write_task_data(splits, bench.task_data(task))
        for mask in loss_masks:
            start = time.perf_counter()
            settings = train_settings(task, preset, mask, seed, epochs)
            ft_key, ft_dir = _finetuned(
                model, splits["train"], settings, bench, source, progress, computed
            )
            attribute_settings = AttributeSettings(
                methods=method_names, loss_mask=mask, template=settings.template
            )
            run_dir = _attributed(
                model, ft_key, ft_dir, splits, attribute_settings, bench, source, progress, computed
            )
            report = evaluate_run(run_dir, extra_k=_extra_k(task, splits["train"]))
            report.update(
                {"task": task, "loss_mask": mask, "finetune": str(ft_dir), "data": task_data.record}
            )
            write_json(bench.metrics_json(task, mask), report)
            rows.extend(_result_rows(task, mask, report))
            log(f"{task} · {mask}: done in {time.perf_counter() - start:.0f} s")
    grid = {
        "tasks": list(data),
        "methods": method_names,
        "preset": preset,
        "loss_masks": list(loss_masks),
        "model": model,
        "seed": seed,
        "epochs": epochs,
        "task_sizes": task_sizes,
        "data_dir": None if data_dir is None else str(Path(data_dir).resolve()),
        "data": {task: task_data.record for task, task_data in data.items()},
    }
    if data_dir is not None:  # requested tasks whose study folder is absent: folder -> task
        missing = study.find_study_folders(data_dir, list(tasks)).missing
        grid["study_folders_missing"] = {study.TASK_FOLDERS[t]: t for t in missing}
    earlier = read_json(bench.bench_json) if bench.bench_json.is_file() else {}
    grid, kept = merge_earlier_tasks(bench, grid, earlier.get("grid"))
    if kept:
        log(f"kept from earlier invocations of this grid: {', '.join(kept)}")
    for task in kept:
        for mask in loss_masks:
            rows.extend(_result_rows(task, mask, read_json(bench.metrics_json(task, mask))))
    order = {task: i for i, task in enumerate(grid["tasks"])}
    rows.sort(key=lambda row: order[row["task"]])  # stable: masks and methods keep their order
    write_results(out_dir, rows, method_names, grid["tasks"], list(loss_masks))
    _record_invocation(bench, earlier, grid, list(data), time.perf_counter() - started, computed)
    return rows


# Grid fields that one invocation adds to rather than replaces (merge_earlier_tasks).
PER_TASK_FIELDS = ("tasks", "data", "task_sizes", "study_folders_missing")


def grid_settings(grid: dict) -> dict:
    """The grid's settings shared by all its tasks (model, methods, preset, masks, seed, ...)."""
    return {key: value for key, value in grid.items() if key not in PER_TASK_FIELDS}


def merge_earlier_tasks(
    bench: BenchDir, grid: dict, previous: dict | None
) -> tuple[dict, list[str]]:
    """``grid`` extended by the tasks an earlier invocation of the same grid settings finished.

    A bench can be built in parts (``--tasks`` a few at a time, e.g. one family per session):
    when ``previous`` (the grid ``bench.json`` records, ``None`` if none) has the same
    :func:`grid_settings`, its tasks whose
    ``metrics.json`` exist for every loss mask stay in the tables; a task this invocation ran
    replaces its earlier entry. Other settings start a new grid. Returns the merged grid (tasks in
    :data:`ALL_TASKS` order) and the tasks kept from earlier.
    """
    if previous is None or grid_settings(previous) != grid_settings(grid):
        return grid, []
    kept = [
        task
        for task in previous["tasks"]
        if task not in grid["tasks"]
        and all(bench.metrics_json(task, mask).is_file() for mask in grid["loss_masks"])
    ]
    if not kept:
        return grid, []
    tasks = set(grid["tasks"]) | set(kept)
    merged = dict(grid)
    merged["tasks"] = [task for task in ALL_TASKS if task in tasks]
    merged["data"] = {
        task: (grid["data"].get(task) or previous["data"][task]) for task in merged["tasks"]
    }
    sizes = {**(previous.get("task_sizes") or {}), **(grid.get("task_sizes") or {})}
    merged["task_sizes"] = sizes or None
    if "study_folders_missing" in grid or "study_folders_missing" in previous:
        missing = {
            **previous.get("study_folders_missing", {}),
            **grid.get("study_folders_missing", {}),
        }
        merged["study_folders_missing"] = {f: t for f, t in missing.items() if t not in tasks}
    return merged, kept


def _record_invocation(
    bench: BenchDir, previous: dict, grid: dict, ran: list[str], wall: float, computed: dict
) -> None:
    """Write ``bench.json``: the (merged) grid and each invocation's tasks, wall time and
    computed counts (history kept from ``previous``, the earlier ``bench.json``, while the grid
    settings are unchanged)."""
    same = grid_settings(previous.get("grid", {})) == grid_settings(grid)
    history = previous.get("history", []) if same else []
    history.append({"tasks": ran, "wall_seconds": wall, "computed": dict(computed)})
    write_json(bench.bench_json, {"grid": grid, "history": history})


def _result_rows(task: str, mask: str, report: dict) -> list[dict]:
    rows = []
    for method, m in report["methods"].items():
        row = {
            "task": task,
            "loss_mask": mask,
            "method": method,
            "acc": m["acc"]["value"],
            "cover": m["cover"]["value"],
            "cover_k": m["cover"]["k"],
            "auprc": m["auprc"]["value"],
            "auroc": m["auroc"]["value"],
            "cover_n_harmful": (m.get("cover@n_harmful") or {}).get("value"),
            "seconds": m.get("seconds"),
        }
        rows.append(row)
    return rows


def write_results(
    out_dir: Path, rows: list[dict], methods: list[str], tasks: list[str], masks: list[str]
) -> None:
    """``results.csv``, ``results.md`` and ``results.png`` from the result rows."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    bench = BenchDir(out_dir)
    write_text(bench.results_csv, buffer.getvalue())
    write_text(bench.results_md, results_markdown(rows, methods, tasks, masks))
    plot_results(rows, methods, tasks, masks, bench.results_png)


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def results_markdown(rows: list[dict], methods: list[str], tasks: list[str], masks: list[str]):
    """One table per loss mask: rows = methods, columns = task × {Acc, Cover, AUPRC}."""
    index = {(r["task"], r["loss_mask"], r["method"]): r for r in rows}
    parts = []
    for mask in masks:
        header = ["method"] + [f"{t} {label}" for t in tasks for label, _ in TABLE_METRICS]
        lines = [f"### loss mask: {mask}", "", "| " + " | ".join(header) + " |"]
        lines.append("|" + "---|" * len(header))
        for method in methods:
            cells = [method]
            for task in tasks:
                row = index.get((task, mask, method), {})
                cells += [_fmt(row.get(key)) for _, key in TABLE_METRICS]
            lines.append("| " + " | ".join(cells) + " |")
        harmful = [t for t in tasks if t.startswith("harmful")]
        if harmful:
            lines += [
                "",
                "Cover uses k = n_train / n_classes (the study's rule); with k = the "
                "number of harmful training rows:",
                "",
            ]
            lines.append("| method | " + " | ".join(f"{t} Cover@n_harmful" for t in harmful) + " |")
            lines.append("|" + "---|" * (len(harmful) + 1))
            for method in methods:
                cells = [
                    _fmt(index.get((t, mask, method), {}).get("cover_n_harmful")) for t in harmful
                ]
                lines.append(f"| {method} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def plot_results(rows, methods, tasks, masks, path: Path) -> None:
    """Grouped bar chart: one panel per (metric, loss mask), tasks on x, one bar per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    index = {(r["task"], r["loss_mask"], r["method"]): r for r in rows}
    fig, axes = plt.subplots(
        len(TABLE_METRICS),
        len(masks),
        figsize=(max(8, 1.2 * len(tasks)) * len(masks), 9),
        squeeze=False,
    )
    width = 0.8 / max(1, len(methods))
    x = np.arange(len(tasks))
    for col, mask in enumerate(masks):
        for row_i, (label, key) in enumerate(TABLE_METRICS):
            ax = axes[row_i][col]
            for j, method in enumerate(methods):
                values = [index.get((t, mask, method), {}).get(key) for t in tasks]
                heights = [np.nan if v is None else v for v in values]
                ax.bar(x + j * width - 0.4 + width / 2, heights, width, label=method)
            ax.set_xticks(x, tasks, rotation=30, ha="right", fontsize=8)
            ax.set_ylim(0, 1.05)
            ax.set_title(f"{label} · loss mask {mask}", fontsize=10)
    # one legend for the figure, below the panels (inside a panel it covered bars)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(methods), 6), fontsize=8)
    legend_rows = -(-len(methods) // 6)
    fig.tight_layout(rect=(0, 0.025 * legend_rows + 0.01, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
