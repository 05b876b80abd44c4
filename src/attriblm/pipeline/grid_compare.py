"""Two bench grids compared per task family: the builders' data against the study's own data.

Input is the ``results.csv`` rows of two ``attriblm bench`` directories
(:func:`attriblm.pipeline.bench_summary.read_results`): one on the offline builders, one with
``--data-dir`` on the study's folders. For each task family (:data:`FAMILIES`) and loss mask:

* **tasks** — the family's tasks present in both grids under that loss mask;
* **per-method Cover** — on each grid, the mean over those tasks of the method's Cover
  (``results.csv`` column ``cover``, k = n_train / n_classes); a method enters only if its Cover
  is defined on every one of those tasks on both grids, so both means are over the same tasks;
* **Spearman** — the rank correlation (average ranks for ties) across those methods of the
  builders' per-method Cover against the study's; ``None`` (shown "–") with a reason when fewer
  than :data:`MIN_METHODS` methods qualify or one grid gives every method the same Cover;
* **RepSim vs influence functions** — on each grid, ``RepSim Cover − best influence-function
  Cover`` (best of :data:`~attriblm.pipeline.bench_summary.INFLUENCE_METHODS` among the methods
  above) and its sign (+1 RepSim ahead, −1 behind, 0 tied); ``"agrees"`` when the two signs are
  equal, ``"disagrees"`` otherwise, ``None`` with a reason when RepSim or every influence
  function is missing.

Point estimates only (no bootstrap interval): this compares orderings, the claims with
intervals are :mod:`attriblm.pipeline.claims`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from attriblm.pipeline.bench_summary import INFLUENCE_METHODS

FAMILIES: dict[str, tuple[str, ...]] = {
    "harmful": ("harmful-s", "harmful-m", "harmful-l"),
    "class attribution": ("grammars", "math", "emotion"),
    "backdoor": ("backdoor-1", "backdoor-3", "backdoor-5"),
}
METRIC = "cover"
MIN_METHODS = 3  # two methods always correlate ±1: no evidence of a shared ordering
SIDES = ("builder", "study")

Rows = Sequence[Mapping]


def _index(rows: Rows) -> dict[tuple[str, str, str], float | None]:
    return {(r["task"], r["loss_mask"], r["method"]): r.get(METRIC) for r in rows}


def _present(index: Mapping, mask: str) -> tuple[set[str], list[str]]:
    """Tasks and methods (in first-seen order) of one grid under ``mask``."""
    tasks, methods = set(), []
    for task, m, method in index:
        if m == mask:
            tasks.add(task)
            if method not in methods:
                methods.append(method)
    return tasks, methods


def family_cover(
    index: Mapping, mask: str, tasks: Sequence[str], methods: Sequence[str]
) -> dict[str, float]:
    """``method → mean Cover over tasks`` for the methods whose Cover is defined on every task."""
    out = {}
    for method in methods:
        values = [index.get((t, mask, method)) for t in tasks]
        if values and all(v is not None for v in values):
            out[method] = float(np.mean(values))
    return out


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's rho of paired values (average ranks for ties); ``None`` if either is constant."""
    from scipy.stats import spearmanr

    if len(set(a)) < 2 or len(set(b)) < 2:
        return None
    return float(spearmanr(a, b).statistic)


def repsim_gap(cover: Mapping[str, float]) -> dict | None:
    """``{repsim, best_influence, best_value, difference, sign}`` on one grid; ``None`` if
    RepSim or every influence function is missing from ``cover``."""
    influence = {m: cover[m] for m in INFLUENCE_METHODS if m in cover}
    if "repsim" not in cover or not influence:
        return None
    best = max(influence, key=influence.__getitem__)
    difference = cover["repsim"] - influence[best]
    return {
        "repsim": cover["repsim"],
        "best_influence": best,
        "best_value": influence[best],
        "difference": difference,
        "sign": int(np.sign(difference)),
    }


def _missing_reason(family: str, mask: str, have: Mapping[str, list[str]]) -> str:
    absent = [side for side in SIDES if not have[side]]
    if len(absent) == len(SIDES):
        return f"no {family} task under loss mask {mask} on either grid"
    if absent:
        return f"no {family} task under loss mask {mask} on the {absent[0]} grid"
    shown = "; ".join(f"{side}: {', '.join(have[side])}" for side in SIDES)
    return f"no {family} task in both grids ({shown})"


def _compare_family(
    family: str, mask: str, indexes: Mapping[str, Mapping], tasks_all: Sequence[str]
) -> dict:
    present = {side: _present(indexes[side], mask) for side in SIDES}
    have = {side: [t for t in tasks_all if t in present[side][0]] for side in SIDES}
    tasks = [t for t in have["builder"] if t in have["study"]]
    entry: dict = {
        "family": family,
        "loss_mask": mask,
        "tasks": tasks,
        "tasks_per_grid": have,
        "methods": [],
        "cover": {side: {} for side in SIDES},
        "spearman": None,
        "spearman_reason": None,
        "repsim_vs_influence": {side: None for side in SIDES},
        "ordering": None,
        "ordering_reason": None,
    }
    if not tasks:
        reason = _missing_reason(family, mask, have)
        entry["spearman_reason"] = entry["ordering_reason"] = reason
        return entry
    study_methods = set(present["study"][1])
    both = [m for m in present["builder"][1] if m in study_methods]
    cover = {side: family_cover(indexes[side], mask, tasks, both) for side in SIDES}
    methods = [m for m in both if all(m in cover[side] for side in SIDES)]
    cover = {side: {m: cover[side][m] for m in methods} for side in SIDES}
    entry.update(methods=methods, cover=cover)

    if len(methods) < MIN_METHODS:
        entry["spearman_reason"] = (
            f"{len(methods)} method(s) with Cover on both grids; Spearman needs {MIN_METHODS}"
        )
    else:
        rho = spearman(*(list(cover[side].values()) for side in SIDES))
        entry["spearman"] = rho
        if rho is None:
            constant = [s for s in SIDES if len(set(cover[s].values())) < 2]
            entry["spearman_reason"] = (
                f"every method has the same Cover on the {' and '.join(constant)} grid"
            )

    gaps = {side: repsim_gap(cover[side]) for side in SIDES}
    entry["repsim_vs_influence"] = gaps
    if "repsim" not in methods:
        entry["ordering_reason"] = "repsim not on both grids"
    elif not any(m in methods for m in INFLUENCE_METHODS):
        entry["ordering_reason"] = "no influence function on both grids"
    else:
        same = gaps["builder"]["sign"] == gaps["study"]["sign"]
        entry["ordering"] = "agrees" if same else "disagrees"
    return entry


def compare_grids(
    builder_rows: Rows,
    study_rows: Rows,
    families: Mapping[str, Sequence[str]] = FAMILIES,
) -> dict:
    """Per family × loss mask: the Spearman of per-method Cover and the RepSim ordering.

    Returns ``{"metric": "cover", "min_methods": 3, "influence_methods": [...], "loss_masks":
    [...], "families": {family: [tasks]}, "entries": [entry, ...]}``, one entry per family ×
    loss mask (masks of either grid, in first-seen order), each ``{family, loss_mask, tasks,
    tasks_per_grid: {builder, study}, methods, cover: {builder: {method: value}, study: {...}},
    spearman, spearman_reason, repsim_vs_influence: {builder, study}, ordering,
    ordering_reason}`` as in the module docstring (a ``None`` value has its reason beside it).
    """
    indexes = {"builder": _index(builder_rows), "study": _index(study_rows)}
    masks: list[str] = []
    for rows in (builder_rows, study_rows):
        for row in rows:
            if row["loss_mask"] not in masks:
                masks.append(row["loss_mask"])
    entries = [
        _compare_family(family, mask, indexes, tasks)
        for mask in masks
        for family, tasks in families.items()
    ]
    return {
        "metric": METRIC,
        "min_methods": MIN_METHODS,
        "influence_methods": list(INFLUENCE_METHODS),
        "loss_masks": masks,
        "families": {family: list(tasks) for family, tasks in families.items()},
        "entries": entries,
    }
