"""Score a run directory's attributions against labels and write ``metrics.json``."""

from __future__ import annotations

import json
from pathlib import Path

from attriblm.errors import AttriblmError, DataError
from attriblm.io import read_yaml
from attriblm.metrics.pooled import pooled_topk
from attriblm.metrics.ranking import evaluate_scores, run_tie_seed
from attriblm.runcheck import check_run
from attriblm.rundir import RunDir


def read_labels(path: Path, source: str | None = None) -> list[str]:
    """Labels of a run's ``data/*.jsonl``; DataError naming the line (and the data it came from)
    if the file is missing or malformed or an example has no label."""
    if not path.is_file():
        raise DataError(f"{path}: missing; is this an attriblm run directory?")
    labels = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                label = json.loads(line).get("label")
            except (ValueError, AttributeError):
                raise DataError(f"{path}: line {number}: malformed run data") from None
            if label is None:
                origin = f" (row {number} of {source})" if source else ""
                raise DataError(
                    f"{path}: line {number}{origin}: no label; evaluate needs a label for every "
                    "example (the label field, --label-field, when running attribute)"
                )
            labels.append(label)
    return labels


def evaluate_run(
    run_dir: Path | str,
    *,
    k: int | None = None,
    extra_k: dict[str, int] | None = None,
    n_boot: int = 1000,
    tie_seed: int | None = None,
    target_label: str | None = None,
) -> dict:
    """Compute every metric for every method of a run; writes and returns ``metrics.json``.

    The run is first checked against its ``run.json`` (:func:`attriblm.runcheck.check_run`:
    every listed method's score file present, readable, ``[n_query, n_train]``, finite), so a
    deleted or damaged score file is a DataError naming it, never a method silently missing.

    Returns ``{"methods": {name: metrics}, "k": k, ...}`` where each ``metrics`` is the dict of
    :func:`attriblm.metrics.ranking.evaluate_scores` plus the method's scoring ``seconds``.
    ``tie_seed`` defaults to the one the run ranked ``topk.jsonl`` with (``run.json``
    ``ranking.tie_seed``), so the metrics and the top-k file break ties the same way;
    with ``target_label`` also ``pooled``, the follow-up's pooled precision@k and auPRC for that
    label (:func:`attriblm.metrics.pooled.pooled_topk`).
    """
    run_dir = Path(run_dir)
    layout = RunDir(run_dir)
    run = check_run(layout)
    if tie_seed is None:
        tie_seed = run_tie_seed(run.info)
    config = _config(layout.config_yaml)
    train_labels = read_labels(layout.data_file("train"), config.get("train"))
    query_labels = read_labels(layout.data_file("queries"), config.get("queries"))
    results: dict[str, dict] = {}
    for name in run.methods:
        metrics = evaluate_scores(
            run.scores[name],
            query_labels,
            train_labels,
            k=k,
            extra_k=extra_k,
            n_boot=n_boot,
            tie_seed=tie_seed,
        )
        metrics["seconds"] = (run.info.get("methods", {}).get(name) or {}).get("seconds")
        if target_label is not None:
            metrics["pooled"] = pooled_topk(
                run.scores[name], train_labels, target_label, tie_seed=tie_seed
            )
        results[name] = metrics
    if not results:
        raise AttriblmError(f"{layout.scores_dir}: no score files to evaluate")
    report = {
        "run": str(run_dir),
        "k": k,
        "tie_seed": tie_seed,
        "target_label": target_label,
        "methods": results,
    }
    layout.write_metrics(report)
    return report


def _config(path: Path) -> dict:
    """The run's ``config.yaml`` (``{}`` when absent); FileFormatError naming it when invalid."""
    config = read_yaml(path) if path.is_file() else {}
    return config if isinstance(config, dict) else {}
