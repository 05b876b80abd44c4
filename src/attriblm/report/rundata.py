"""Read a run directory (docs/DESIGN.md §2) into plain data for the HTML report and ``inspect``.

Only the files ``attribute``, ``trace`` and ``evaluate`` write are read, through
:class:`attriblm.rundir.RunDir` (which owns the layout and checks ``run.json``'s
``format_version``): ``run.json``, ``config.yaml``, ``data/{train,queries}.jsonl``,
``scores/<method>.safetensors`` (or ``topk.jsonl`` when a method has no score file),
``generations.jsonl`` of a ``trace`` run, ``metrics.json`` and ``*.png``. Nothing is written.

Indices: ``query`` and training ``index`` values are 0-based positions in the query / train
file; displayed "rows" are 1-based (``row = index + 1``), as in attriblm's error messages.
Ranking is the metrics' (:func:`attriblm.metrics.ranking.rank_train`: score descending, ties by a
per-query permutation seeded with the run's ``run.json`` ``ranking.tie_seed``), so a report's
top-k agrees with ``topk.jsonl``, ``Acc`` and ``Cover``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from attriblm.errors import AttriblmError, DataError
from attriblm.runcheck import check_run
from attriblm.rundir import RunDir


@dataclass(frozen=True)
class Hit:
    """One training example in a query's top-k for one method."""

    rank: int
    index: int
    score: float
    prompt: str
    response: str
    label: str | None
    correct: bool | None  # same label as the query; None when either label is missing


@dataclass
class RunData:
    """A run directory loaded for display (see the module docstring for index conventions)."""

    path: Path
    config: dict[str, Any]
    config_text: str
    info: dict[str, Any]
    train: list[dict[str, Any]]
    queries: list[dict[str, Any]]
    methods: list[str]
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    stored_topk: dict[tuple[str, int], list[dict[str, Any]]] = field(default_factory=dict)
    metrics: dict[str, Any] | None = None
    metrics_source: str = "none"
    metrics_note: str = ""
    images: list[Path] = field(default_factory=list)
    generations: list[dict[str, Any]] | None = None  # generations.jsonl of a trace run

    @property
    def layout(self) -> RunDir:
        return RunDir(self.path)

    @property
    def trace(self) -> dict[str, Any]:
        """``run.json["trace"]`` of a ``trace`` run (detector, counts); ``{}`` otherwise."""
        trace = self.info.get("trace")
        return trace if isinstance(trace, dict) else {}

    def generation_of(self, query: int) -> dict[str, Any] | None:
        """The ``generations.jsonl`` row whose kept pair is 0-based ``query`` (trace runs)."""
        for row in self.generations or []:
            if row.get("kept") and row.get("query") == query:
                return row
        return None

    @property
    def n_query(self) -> int:
        return len(self.queries)

    @property
    def n_train(self) -> int:
        return len(self.train)


def is_run_dir(path: Path) -> bool:
    """True when ``path`` looks like an ``attribute`` run directory."""
    return RunDir(path).is_run()


def read_json_file(path: Path) -> Any:
    """Parse a JSON file; a one-line :class:`DataError` naming it when that fails."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: cannot read JSON ({error})") from None


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise DataError(f"{path}: cannot read YAML ({error})") from None
    return loaded if isinstance(loaded, dict) else {}


def load_run(path: Path | str, *, compute_metrics: bool = True) -> RunData:
    """Load a run directory; ``compute_metrics`` evaluates in memory when no metrics.json exists.

    Raises :class:`AttriblmError` when ``path`` is not a run directory, and a DataError naming
    the first problem when it does not match its ``run.json``
    (:func:`attriblm.runcheck.check_run`; a run without ``scores/`` may list its methods in
    ``topk.jsonl`` instead).
    """
    path = Path(path)
    layout = RunDir(path)
    if not layout.is_run():
        raise AttriblmError(
            f"{path}: not an attriblm run directory (needs run.json and scores/ or topk.jsonl)"
        )
    layout.read_info()  # an unknown format version is the first thing said
    train = layout.read_data("train")
    queries = layout.read_data("queries")
    stored: dict[tuple[str, int], list[dict[str, Any]]] = {}
    if layout.topk.is_file():
        for number, row in enumerate(layout.read_topk(), start=1):
            try:
                stored[(str(row["method"]), int(row["query"]))] = list(row.get("top", []))
            except (TypeError, KeyError, ValueError, AttributeError):
                raise DataError(
                    f"{layout.topk}: row {number}: expected an object with 'method', "
                    "'query' and 'top'"
                ) from None
    in_topk = {method for method, _ in stored}
    checked = check_run(layout, allow_topk=True, topk_methods=in_topk)
    methods = checked.methods + sorted(in_topk - set(checked.methods))
    run = RunData(
        path=path,
        config=_read_yaml(layout.config_yaml),
        config_text=layout.config_text(),
        info=checked.info,
        train=train,
        queries=queries,
        methods=methods,
        scores={m: np.asarray(matrix, dtype=np.float64) for m, matrix in checked.scores.items()},
        stored_topk=stored,
        images=layout.plots(),
        generations=_generations(layout, len(queries)),
    )
    _attach_metrics(run, compute_metrics)
    return run


def _generations(layout: RunDir, n_query: int) -> list[dict[str, Any]] | None:
    """``generations.jsonl`` of a trace run (``None`` without one), its kept rows checked to
    point at the queries ``0 … n_query - 1`` in order; DataError naming the row otherwise."""
    if not layout.has_generations():
        return None
    rows = layout.read_generations()
    queries = layout.data_file("queries")
    kept = 0
    for number, row in enumerate(rows, start=1):
        if not row["kept"]:
            continue
        if row.get("query") != kept:
            raise DataError(
                f"{layout.generations}: row {number}: kept generation has 'query' "
                f"{row.get('query')!r}, expected {kept} (the kept rows are {queries} in order)"
            )
        kept += 1
    if kept != n_query:
        raise DataError(
            f"{layout.generations}: {kept} kept generations, but {queries} has {n_query} rows"
        )
    return rows


def _attach_metrics(run: RunData, compute: bool) -> None:
    metrics_file = run.layout.metrics_json
    if metrics_file.is_file():
        run.metrics = read_json_file(metrics_file)
        run.metrics_source = "metrics.json"
        return
    labelled = all(r.get("label") is not None for r in run.train + run.queries)
    if not compute:
        run.metrics_note = "no metrics.json; run `attriblm evaluate --run RUN`"
    elif not run.scores:
        run.metrics_note = "no metrics.json and no score files to evaluate"
    elif not labelled:
        run.metrics_note = "no metrics.json, and some examples have no label: nothing to score"
    else:
        from attriblm.metrics.ranking import evaluate_scores, run_tie_seed

        tie_seed = run_tie_seed(run.info)
        train_labels = [r.get("label") for r in run.train]
        query_labels = [r.get("label") for r in run.queries]
        methods = {}
        for name in run.methods:
            if name not in run.scores:
                continue
            metrics = evaluate_scores(
                run.scores[name], query_labels, train_labels, tie_seed=tie_seed
            )
            metrics["seconds"] = run.info.get("methods", {}).get(name, {}).get("seconds")
            methods[name] = metrics
        run.metrics = {"run": str(run.path), "k": None, "tie_seed": tie_seed, "methods": methods}
        run.metrics_source = "computed"
        run.metrics_note = (
            "computed for this report from the score files (not saved); "
            "`attriblm evaluate --run RUN` writes metrics.json"
        )


def _correct(query_label: str | None, label: str | None) -> bool | None:
    if query_label is None or label is None:
        return None
    return query_label == label


def top_hits(run: RunData, method: str, query: int, k: int) -> list[Hit]:
    """The ``k`` highest-scoring training examples of 0-based ``query`` under ``method``."""
    query_label = run.queries[query].get("label")
    if method in run.scores:
        from attriblm.metrics.ranking import rank_train, run_tie_seed

        row = run.scores[method][query]
        order = rank_train(row[None, :], run_tie_seed(run.info), queries=[query])[0]
        pairs = [(int(i), float(row[i])) for i in order[: min(k, row.size)]]
    else:
        stored = run.stored_topk.get((method, query), [])
        pairs = [(int(t["index"]), float(t["score"])) for t in stored[:k]]
    hits = []
    for rank, (index, score) in enumerate(pairs, start=1):
        example = run.train[index] if 0 <= index < len(run.train) else {}
        label = example.get("label")
        hits.append(
            Hit(
                rank=rank,
                index=index,
                score=score,
                prompt=str(example.get("prompt", "")),
                response=str(example.get("response", "")),
                label=label,
                correct=_correct(query_label, label),
            )
        )
    return hits


def overlap_matrix(top: dict[str, list[Hit]], k: int) -> dict[str, dict[str, float]]:
    """Pairwise top-k agreement ``|A ∩ B| / k`` between methods (1 on the diagonal)."""
    sets = {m: {h.index for h in hits} for m, hits in top.items()}
    return {a: {b: len(sets[a] & sets[b]) / k if k else float("nan") for b in sets} for a in sets}


def check_query(run: RunData, query: int) -> None:
    """Raise a one-line :class:`AttriblmError` when 0-based ``query`` is out of range."""
    n = run.n_query
    if not 0 <= query < n:
        raise AttriblmError(
            f"{run.layout.data_file('queries')}: no query at index {query} "
            f"(the run has {n} queries: indices 0–{n - 1}, rows 1–{n})"
        )


def check_method(run: RunData, method: str) -> None:
    """Raise a one-line :class:`AttriblmError` when ``method`` is not in the run."""
    if method not in run.methods:
        raise AttriblmError(
            f"{run.path}: no method {method!r} in this run (has: {', '.join(run.methods)})"
        )


def check_k(k: int) -> None:
    """Raise a one-line :class:`AttriblmError` for ``k < 1``."""
    if k < 1:
        raise AttriblmError(f"--k {k}: must be at least 1")
