"""The study's comparative claims, checked with bootstrap intervals on per-query metrics.

Input is a *per-query table*: ``(task, loss_mask, method) → {"acc", "cover", "auprc", ...}``,
each a ``[n_query]`` float array (NaN where undefined;
:func:`attriblm.metrics.ranking.per_query_values`). Every claim is a statistic of the per-task
means (e.g. "mean over tasks of RepSim minus the best influence function"), computed on the data
and on ``n_boot`` bootstrap replicates that resample each task's queries with replacement, the
same draw for every method of that task (paired). The 95% interval is the percentile interval
of the replicates; a "best" method is re-chosen inside each replicate.

Verdicts are decided on **Cover and AUPRC**; Acc is reported beside them but not used: it asks
only whether the top-1 row is relevant, so it saturates at 1.0 once every query has one clearly
relevant neighbour (as for almost every method in the quick grid of ``docs/RESULTS.md``) and
then cannot separate methods. Per metric, with the claim "statistic ≥ c" (or "≤ c"):

* ``agrees`` — the whole interval lies on the claim's side of ``c``;
* ``does not agree`` — the whole interval lies on the other side;
* ``inconclusive`` — the interval contains ``c``;
* ``not measured`` — the grid lacks a task, method or defined value the claim needs.

A claim's verdict is ``agrees`` (or ``does not agree``) when Cover and AUPRC both say so,
``not measured`` when neither could be measured, and ``inconclusive`` otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

Table = Mapping[tuple[str, str, str], Mapping[str, np.ndarray]]

VERDICT_METRICS = ("cover", "auprc")
SHOWN_METRICS = ("cover", "auprc", "acc")
METRIC_LABELS = {"cover": "Cover", "auprc": "AUPRC", "acc": "Acc"}
N_BOOT = 1000
BOOT_SEED = 0


@dataclass(frozen=True)
class Means:
    """One (task, method) mean of a per-query metric and its ``[n_boot]`` bootstrap replicates."""

    point: float
    boot: np.ndarray


def _nanmean(values: np.ndarray, axis: int | None = None) -> np.ndarray | float:
    """Mean ignoring NaN; NaN (no warning) where every value is NaN."""
    kept = ~np.isnan(values)
    total = np.where(kept, values, 0.0).sum(axis=axis)
    count = kept.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def task_draws(
    table: Table, mask: str, tasks: Sequence[str], n_boot: int = N_BOOT, seed: int = BOOT_SEED
) -> dict[str, np.ndarray]:
    """Per task, ``[n_boot, n_query]`` query indices drawn with replacement (shared by methods).

    ``numpy.random.default_rng((seed, i))`` for the ``i``-th task of ``tasks``, so a task's draws
    do not depend on which other tasks a claim uses.
    """
    draws = {}
    for i, task in enumerate(tasks):
        sizes = {
            len(v)
            for (t, m, _), row in table.items()
            if (t, m) == (task, mask)
            for v in row.values()
        }
        if len(sizes) != 1:
            raise ValueError(f"{task} · {mask}: methods disagree on the number of queries {sizes}")
        n = sizes.pop()
        draws[task] = np.random.default_rng((seed, i)).integers(0, n, size=(n_boot, n))
    return draws


def means(
    table: Table, mask: str, method: str, task: str, metric: str, draws: Mapping[str, np.ndarray]
) -> Means | None:
    """The method's mean ``metric`` on ``task`` and its replicates; ``None`` when not measured."""
    row = table.get((task, mask, method))
    if row is None or metric not in row:
        return None
    values = np.asarray(row[metric], dtype=np.float64)
    point = float(_nanmean(values))
    if math.isnan(point):
        return None
    return Means(point, np.asarray(_nanmean(values[draws[task]], axis=1), dtype=np.float64))


def _over_tasks(parts: Sequence[Means]) -> Means:
    return Means(float(np.mean([p.point for p in parts])), np.mean([p.boot for p in parts], axis=0))


def method_over_tasks(
    table: Table,
    mask: str,
    method: str,
    tasks: Sequence[str],
    metric: str,
    draws: Mapping[str, np.ndarray],
) -> Means | None:
    """Mean over ``tasks`` of the method's per-task means (``None`` if any task is missing)."""
    parts = [means(table, mask, method, t, metric, draws) for t in tasks]
    if not parts or any(p is None for p in parts):
        return None
    return _over_tasks(parts)


def interval(boot: np.ndarray) -> tuple[float, float]:
    """The 2.5% and 97.5% percentiles of the replicates (NaN replicates dropped)."""
    kept = boot[~np.isnan(boot)]
    if kept.size == 0:
        return math.nan, math.nan
    lo, hi = np.quantile(kept, [0.025, 0.975])
    return float(lo), float(hi)


def verdict(lo: float, hi: float, threshold: float, side: str) -> str:
    """Verdict of one interval against the claim ``statistic ≥ threshold`` (side ``">="``) or
    ``≤`` (``"<="``); see the module docstring."""
    if math.isnan(lo) or math.isnan(hi):
        return "not measured"
    if side == ">=":
        return (
            "agrees" if lo >= threshold else "does not agree" if hi < threshold else "inconclusive"
        )
    if side == "<=":
        return (
            "agrees" if hi <= threshold else "does not agree" if lo > threshold else "inconclusive"
        )
    raise ValueError(f"side must be '>=' or '<=', got {side!r}")


def overall(per_metric: Mapping[str, Mapping]) -> str:
    """The claim's verdict from its Cover and AUPRC verdicts (module docstring)."""
    found = [per_metric[m]["verdict"] for m in VERDICT_METRICS if m in per_metric]
    measured = [v for v in found if v != "not measured"]
    if not measured:
        return "not measured"
    if len(measured) == len(VERDICT_METRICS) and len(set(measured)) == 1:
        return measured[0]
    return "inconclusive"


Statistic = Callable[[str, Mapping[str, np.ndarray]], tuple[Means | None, dict]]


def _check(
    statistic: Statistic,
    draws: Mapping[str, np.ndarray],
    threshold: float,
    side: str,
) -> dict:
    """Run ``statistic`` per shown metric; returns ``{metric: {value, ci95, verdict, ...}}``."""
    out = {}
    for metric in SHOWN_METRICS:
        stat, extra = statistic(metric, draws)
        if stat is None:
            out[metric] = {"value": None, "ci95": [None, None], "verdict": "not measured", **extra}
            continue
        lo, hi = interval(stat.boot)
        out[metric] = {
            "value": stat.point,
            "ci95": [lo, hi],
            "verdict": verdict(lo, hi, threshold, side),
            **extra,
        }
    return out


def repsim_ahead(
    table: Table,
    mask: str,
    tasks: Sequence[str],
    influence: Sequence[str],
    margin: float,
    *,
    n_boot: int = N_BOOT,
    seed: int = BOOT_SEED,
) -> dict:
    """RepSim minus the best influence function, mean over ``tasks``; claim: ``≥ margin``.

    The best influence function is the one with the highest mean over ``tasks`` (chosen on the
    data for the report, and again inside every replicate for the interval).
    """
    draws = task_draws(table, mask, tasks, n_boot, seed) if tasks else {}

    def statistic(metric: str, draws: Mapping[str, np.ndarray]) -> tuple[Means | None, dict]:
        if not tasks:
            return None, {}
        rep = method_over_tasks(table, mask, "repsim", tasks, metric, draws)
        per_if = {m: method_over_tasks(table, mask, m, tasks, metric, draws) for m in influence}
        per_if = {m: v for m, v in per_if.items() if v is not None}
        extra = {
            "repsim": None if rep is None else rep.point,
            "influence": {m: v.point for m, v in per_if.items()},
        }
        if rep is None or not per_if:
            return None, extra
        best = max(per_if, key=lambda m: per_if[m].point)
        extra["best_influence"] = best
        best_boot = np.max([v.boot for v in per_if.values()], axis=0)
        return Means(rep.point - per_if[best].point, rep.boot - best_boot), extra

    per_metric = _check(statistic, draws, margin, ">=")
    return _claim(
        "repsim_ahead",
        mask,
        per_metric,
        {"tasks": list(tasks), "threshold": margin, "side": ">="},
        n_boot,
        seed,
    )


def exact_not_better(
    table: Table,
    mask: str,
    tasks: Sequence[str],
    *,
    n_boot: int = N_BOOT,
    seed: int = BOOT_SEED,
) -> dict:
    """``exact`` minus ``gradsim``, mean over ``tasks``; claim: ``≤ 0``."""
    draws = task_draws(table, mask, tasks, n_boot, seed) if tasks else {}

    def statistic(metric: str, draws: Mapping[str, np.ndarray]) -> tuple[Means | None, dict]:
        exact = method_over_tasks(table, mask, "exact", tasks, metric, draws)
        grad = method_over_tasks(table, mask, "gradsim", tasks, metric, draws)
        extra = {
            "exact": None if exact is None else exact.point,
            "gradsim": None if grad is None else grad.point,
        }
        if exact is None or grad is None:
            return None, extra
        return Means(exact.point - grad.point, exact.boot - grad.boot), extra

    per_metric = _check(statistic, draws, 0.0, "<=")
    return _claim(
        "exact_not_better",
        mask,
        per_metric,
        {"tasks": list(tasks), "threshold": 0.0, "side": "<="},
        n_boot,
        seed,
    )


def every_method_high(
    table: Table,
    mask: str,
    task: str,
    methods: Sequence[str],
    floor: float,
    *,
    n_boot: int = N_BOOT,
    seed: int = BOOT_SEED,
) -> dict:
    """The lowest method's mean on ``task``; claim: ``≥ floor`` (the ``math_easy`` finding)."""
    present = [m for m in methods if (task, mask, m) in table]
    draws = task_draws(table, mask, [task], n_boot, seed) if present else {}

    def statistic(metric: str, draws: Mapping[str, np.ndarray]) -> tuple[Means | None, dict]:
        per = {m: means(table, mask, m, task, metric, draws) for m in present}
        per = {m: v for m, v in per.items() if v is not None}
        extra = {"per_method": {m: v.point for m, v in per.items()}}
        if not per:
            return None, extra
        lowest = min(per, key=lambda m: per[m].point)
        extra["lowest"] = lowest
        return Means(per[lowest].point, np.min([v.boot for v in per.values()], axis=0)), extra

    per_metric = _check(statistic, draws, floor, ">=")
    return _claim(
        "math_easy",
        mask,
        per_metric,
        {"tasks": [task] if present else [], "threshold": floor, "side": ">="},
        n_boot,
        seed,
    )


def _claim(name: str, mask: str, per_metric: dict, setup: dict, n_boot: int, seed: int) -> dict:
    return {
        "finding": name,
        "loss_mask": mask,
        "verdict": overall(per_metric),
        "numbers": {
            **setup,
            "metrics": per_metric,
            "verdict_metrics": list(VERDICT_METRICS),
            "bootstrap": {"n_boot": n_boot, "seed": seed, "level": 0.95, "unit": "query"},
        },
    }
