"""A run directory checked against its ``run.json`` on read (``evaluate``, ``report``, ``inspect``).

``run.json`` (written by ``attribute``, docs/DESIGN.md §2) lists the methods the run scored
(``methods``) and its sizes (``n_query``, ``n_train``). :func:`check_run` raises a one-line
:class:`~attriblm.errors.DataError` naming the first problem:

- ``run.json`` missing, unreadable or not a JSON object;
- ``data/train.jsonl`` / ``data/queries.jsonl`` missing or holding another number of rows
  than ``run.json`` says;
- a listed method without ``scores/<method>.safetensors`` (a run trimmed to ``topk.jsonl``,
  i.e. without a ``scores/`` directory, may instead have the method's rows there, when
  ``allow_topk``);
- a score file (listed or not) that is unreadable, lacks a 2-D tensor ``scores``, is not
  ``[n_query, n_train]`` or holds NaN / inf.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from attriblm.errors import AttriblmError, DataError


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
    """``run.json`` as a dict; AttriblmError when it is absent, DataError when unreadable."""
    path = run_dir / "run.json"
    if not path.is_file():
        raise AttriblmError(f"{run_dir}: not a run directory (no run.json); run `attribute` first")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: cannot read JSON ({error})") from None
    if not isinstance(info, dict):
        raise DataError(f"{path}: not a JSON object")
    return info


def count_rows(path: Path) -> int:
    """Non-blank lines of a run's ``data/*.jsonl``; DataError when the file is missing."""
    if not path.is_file():
        raise DataError(f"{path}: missing; is this an attriblm run directory?")
    try:
        with path.open(encoding="utf-8") as handle:
            return sum(1 for line in handle if line.strip())
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read ({error})") from None


def read_score_matrix(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Tensor ``scores`` of a score file, checked to be finite and of ``shape`` ``[n_query,
    n_train]``; DataError naming the file otherwise."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        matrix = load_file(str(path)).get("scores")
    except (OSError, SafetensorError) as error:
        reason = getattr(error, "strerror", None) or (str(error).splitlines() or ["?"])[0]
        raise DataError(f"{path}: cannot read score file ({reason})") from None
    if matrix is None or matrix.ndim != 2:
        raise DataError(f"{path}: no 2-D tensor 'scores' [n_query, n_train]")
    if tuple(matrix.shape) != tuple(shape):
        raise DataError(
            f"{path}: scores are {list(matrix.shape)} but the run has {shape[0]} queries × "
            f"{shape[1]} train rows"
        )
    bad = ~np.isfinite(matrix)
    if bad.any():
        query, train = (int(i) for i in np.argwhere(bad)[0])
        raise DataError(
            f"{path}: {int(bad.sum())} scores are NaN or infinite (first: query row {query + 1}, "
            f"train row {train + 1})"
        )
    return matrix


def _size(info: dict[str, Any], key: str, counted: int, run_json: Path, data: Path) -> int:
    listed = info.get(key)
    if listed is not None and listed != counted:
        raise DataError(f"{data}: {counted} rows, but {run_json} says {key} = {listed}")
    return counted


def check_run(
    run_dir: Path | str, *, allow_topk: bool = False, topk_methods: set[str] | None = None
) -> CheckedRun:
    """Check ``run_dir`` against its ``run.json`` (module doc) and load its score matrices.

    ``allow_topk``: a run without ``scores/`` may have its listed methods in ``topk.jsonl``
    instead (``topk_methods``: the methods that file has rows for).
    """
    run_dir = Path(run_dir)
    info = read_run_info(run_dir)
    run_json = run_dir / "run.json"
    train_file = run_dir / "data" / "train.jsonl"
    query_file = run_dir / "data" / "queries.jsonl"
    n_train = _size(info, "n_train", count_rows(train_file), run_json, train_file)
    n_query = _size(info, "n_query", count_rows(query_file), run_json, query_file)
    listed = info.get("methods") or {}
    if not isinstance(listed, dict):
        raise DataError(f"{run_json}: 'methods' is not a mapping of method name to run info")
    scores_dir = run_dir / "scores"
    files = {p.stem: p for p in sorted(scores_dir.glob("*.safetensors"))}
    trimmed = allow_topk and not scores_dir.is_dir()
    for name in listed:
        if name in files:
            continue
        if trimmed and name in (topk_methods or set()):
            continue
        raise DataError(
            f"{scores_dir / f'{name}.safetensors'}: missing, but {run_json} lists method "
            f"{name!r}; rerun `attribute` (or remove the run)"
        )
    methods = [m for m in listed if m in files or trimmed] + sorted(set(files) - set(listed))
    run = CheckedRun(path=run_dir, info=info, n_query=n_query, n_train=n_train, methods=methods)
    for name, path in files.items():
        run.scores[name] = read_score_matrix(path, (n_query, n_train))
    return run
