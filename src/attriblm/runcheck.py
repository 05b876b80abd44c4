"""A run directory checked against its ``run.json`` on read (``evaluate``, ``report``, ``inspect``).

``run.json`` (written by ``attribute``, docs/DESIGN.md §2) lists the methods the run scored
(``methods``) and its sizes (``n_query``, ``n_train``). :func:`check_run` raises a one-line
:class:`~attriblm.errors.DataError` naming the first problem:

- ``run.json`` missing, unreadable, not a JSON object or of a newer / unknown
  ``format_version`` (:mod:`attriblm.rundir`, which owns the layout);
- ``data/train.jsonl`` / ``data/queries.jsonl`` missing or holding another number of rows
  than ``run.json`` says;
- a listed method without ``scores/<method>.safetensors`` (a run trimmed to ``topk.jsonl``,
  i.e. without a ``scores/`` directory, may instead have the method's rows there, when
  ``allow_topk``);
- a score file (listed or not) that is unreadable, lacks a 2-D tensor ``scores``, is not
  ``[n_query, n_train]`` or holds NaN / inf.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from attriblm.errors import DataError
from attriblm.rundir import RunDir, count_rows, read_score_matrix

__all__ = ["CheckedRun", "check_run", "count_rows", "read_run_info", "read_score_matrix"]


@dataclass
class CheckedRun:
    """A run that passed :func:`check_run`: its ``run.json``, methods (run.json order, then
    unlisted score files by name) and score matrices ``[n_query, n_train]`` (float32)."""

    path: Path
    info: dict[str, Any]
    n_query: int
    n_train: int
    methods: list[str]
    scores: dict[str, np.ndarray] = field(default_factory=dict)


def read_run_info(run_dir: Path) -> dict[str, Any]:
    """``run.json`` as a dict (:meth:`attriblm.rundir.RunDir.read_info`: AttriblmError when it
    is absent, DataError when unreadable or of an unknown format version)."""
    return RunDir(run_dir).read_info()


def _size(info: dict[str, Any], key: str, counted: int, run_json: Path, data: Path) -> int:
    listed = info.get(key)
    if listed is not None and listed != counted:
        raise DataError(f"{data}: {counted} rows, but {run_json} says {key} = {listed}")
    return counted


def check_run(
    run_dir: Path | str | RunDir, *, allow_topk: bool = False, topk_methods: set[str] | None = None
) -> CheckedRun:
    """Check ``run_dir`` against its ``run.json`` (module doc) and load its score matrices.

    ``allow_topk``: a run without ``scores/`` may have its listed methods in ``topk.jsonl``
    instead (``topk_methods``: the methods that file has rows for).
    """
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    info = run.read_info()
    train_file, query_file = run.data_file("train"), run.data_file("queries")
    n_train = _size(info, "n_train", count_rows(train_file), run.run_json, train_file)
    n_query = _size(info, "n_query", count_rows(query_file), run.run_json, query_file)
    listed = info.get("methods") or {}
    if not isinstance(listed, dict):
        raise DataError(f"{run.run_json}: 'methods' is not a mapping of method name to run info")
    files = run.score_files()
    trimmed = allow_topk and not run.scores_dir.is_dir()
    for name in listed:
        if name in files:
            continue
        if trimmed and name in (topk_methods or set()):
            continue
        raise DataError(
            f"{run.scores_file(name)}: missing, but {run.run_json} lists method "
            f"{name!r}; rerun `attribute` (or remove the run)"
        )
    methods = [m for m in listed if m in files or trimmed] + sorted(set(files) - set(listed))
    checked = CheckedRun(
        path=run.path, info=info, n_query=n_query, n_train=n_train, methods=methods
    )
    for name in files:
        checked.scores[name] = run.load_scores(name, (n_query, n_train))
    return checked
