"""Summaries of a finished ``bench`` directory: compute time and the study's findings, measured.

Everything here is read from the files a bench run wrote (``results.csv``, each task's
``metrics.json``, the cached fine-tunes' ``train_log.json`` and runs' ``run.json`` and score
files), so a document built from it carries no hand-typed number.

The study's qualitative findings checked here (arXiv 2409.19998):

- ``repsim_ahead``: representation similarity (RepSim) is far ahead of the influence functions on
  harmful-data identification and backdoor detection: repsim − best influence function ≥ 0.2;
- ``lissa_paper_like_gradsim``: the paper's LiSSA ranks training rows like gradient similarity
  (mean per-query Spearman ≥ 0.9);
- ``math_easy``: class attribution on math is easy for every method: the lowest method ≥ 0.8;
- ``exact_not_better``: the exact inverse (an influence function without approximation error)
  does not beat Hessian-free gradient similarity: exact − gradsim ≤ 0 over all tasks.

The three comparative ones are decided on Cover and AUPRC with bootstrap intervals over queries
(:mod:`attriblm.pipeline.claims`), with Acc beside them: Acc saturates at 1.0 once every query
has one clearly relevant neighbour and then cannot separate methods.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np

from attriblm.errors import AttriblmError
from attriblm.io import read_json
from attriblm.metrics.ranking import per_query_values, run_tie_seed
from attriblm.pipeline import claims
from attriblm.pipeline.bench_layout import BenchDir
from attriblm.pipeline.evaluate import read_labels

INFLUENCE_METHODS = ("datainf", "lissa-paper", "lissa", "exact", "cg", "kfac", "ekfac")
IDENTIFICATION_PREFIXES = ("harmful", "backdoor")
# "Far ahead" / "easy" / "ranks like" thresholds of the verdicts; stated in the document.
AHEAD_MARGIN = 0.2
EASY_FLOOR = 0.8
LISSA_SPEARMAN = 0.9


def read_results(out_dir: Path | str) -> list[dict]:
    """``results.csv`` rows with numeric fields as floats (``None`` where empty)."""
    path = BenchDir(out_dir).results_csv
    if not path.is_file():
        raise AttriblmError(f"{path}: missing; run `attriblm bench` first")
    with path.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        for key, value in row.items():
            if key not in ("task", "loss_mask", "method"):
                row[key] = None if value in ("", None) else float(value)
    return rows


def compute_seconds(out_dir: Path | str) -> dict:
    """Fine-tune and attribution seconds of every task × loss mask, as recorded when computed.

    Returns ``{"finetune": s, "attribute": s, "total": s, "per_run": [{task, loss_mask, ...}]}``;
    this is the time an uncached ``bench`` spends on compute (building data and evaluating add
    a few seconds).
    """
    bench = BenchDir(out_dir)
    per_run = []
    for metrics_path in bench.metrics_files():
        report = read_json(metrics_path)
        log = read_json(bench.finetune_of(report) / "train_log.json")
        run = bench.run_of(report).read_info()
        per_run.append(
            {
                "task": report["task"],
                "loss_mask": report["loss_mask"],
                "finetune": max(e["wall_s"] for e in log["epochs"]),
                "attribute": run["timings_seconds"]["total"],
            }
        )
    finetune = sum(r["finetune"] for r in per_run)
    attribute = sum(r["attribute"] for r in per_run)
    return {
        "finetune": finetune,
        "attribute": attribute,
        "total": finetune + attribute,
        "per_run": per_run,
    }


def mean_rank_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over queries (rows) of the Spearman correlation of two ``[n_query, n_train]`` arrays."""
    from scipy.stats import spearmanr

    values = []
    for row_a, row_b in zip(a, b, strict=True):
        rho = spearmanr(row_a, row_b).statistic
        if np.isfinite(rho):
            values.append(float(rho))
    return float(np.mean(values)) if values else float("nan")


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def per_query_table(out_dir: Path | str) -> dict[tuple[str, str, str], dict[str, np.ndarray]]:
    """``(task, loss_mask, method) → {"acc", "cover", "auprc", "auroc"}`` per-query values.

    Recomputed from each run's score files and labels with the k (``cover.k``) and tie seed
    the task's ``metrics.json`` was made with, so their means are the numbers in
    ``results.csv`` (:func:`attriblm.metrics.ranking.per_query_values`).
    """
    bench = BenchDir(out_dir)
    table = {}
    for metrics_path in bench.metrics_files():
        report = read_json(metrics_path)
        run = bench.run_of(report)
        train = read_labels(run.data_file("train"))
        queries = read_labels(run.data_file("queries"))
        tie_seed = report.get("tie_seed")
        if tie_seed is None:
            tie_seed = run_tie_seed(run.read_info())
        shape = run.shape()
        for method, metrics in report["methods"].items():
            scores = run.load_scores(method, shape)
            table[(report["task"], report["loss_mask"], method)] = per_query_values(
                scores, queries, train, k=metrics["cover"]["k"], tie_seed=tie_seed
            )
    return table


def findings(
    out_dir: Path | str, *, n_boot: int = claims.N_BOOT, seed: int = claims.BOOT_SEED
) -> list[dict]:
    """Each study finding, per loss mask: the measured numbers and the verdict.

    Each entry: ``{"finding", "loss_mask", "verdict", "numbers": {...}}`` with ``verdict`` one
    of ``agrees``, ``does not agree``, ``inconclusive``, ``not measured``. The comparative
    findings are checked on Cover and AUPRC with bootstrap intervals over queries
    (:mod:`attriblm.pipeline.claims`; Acc is reported beside them); the LiSSA one on the
    Spearman agreement of the two methods' scores.
    """
    out_dir = Path(out_dir)
    rows = read_results(out_dir)
    index = {(r["task"], r["loss_mask"], r["method"]): r for r in rows}
    table = per_query_table(out_dir)
    tasks = sorted({r["task"] for r in rows})
    methods = sorted({r["method"] for r in rows})
    boot = {"n_boot": n_boot, "seed": seed}
    results = []
    for mask in sorted({r["loss_mask"] for r in rows}):
        ident = [t for t in tasks if t.startswith(IDENTIFICATION_PREFIXES)]
        influence = [m for m in INFLUENCE_METHODS if m in methods]
        results.append(claims.repsim_ahead(table, mask, ident, influence, AHEAD_MARGIN, **boot))
        results.append(_lissa_like_gradsim(out_dir, index, tasks, mask))
        results.append(claims.every_method_high(table, mask, "math", methods, EASY_FLOOR, **boot))
        results.append(claims.exact_not_better(table, mask, tasks, **boot))
    return results


def _lissa_like_gradsim(out_dir: Path, index: dict, tasks: list[str], mask: str) -> dict:
    rhos, acc_gaps = {}, []
    for task in tasks:
        if (task, mask, "lissa-paper") not in index or (task, mask, "gradsim") not in index:
            continue
        bench = BenchDir(out_dir)
        run = bench.run_of(read_json(bench.metrics_json(task, mask)))
        lissa = run.load_scores("lissa-paper").astype(np.float64)
        grad = run.load_scores("gradsim").astype(np.float64)
        rhos[task] = mean_rank_agreement(lissa, grad)
        lissa_acc = index[(task, mask, "lissa-paper")]["acc"]
        grad_acc = index[(task, mask, "gradsim")]["acc"]
        if lissa_acc is not None and grad_acc is not None:
            acc_gaps.append(abs(lissa_acc - grad_acc))
    mean_rho = _mean(list(rhos.values()))
    if mean_rho is None:
        verdict = "not measured"
    else:
        verdict = "agrees" if mean_rho >= LISSA_SPEARMAN else "does not agree"
    return {
        "finding": "lissa_paper_like_gradsim",
        "loss_mask": mask,
        "verdict": verdict,
        "numbers": {
            "spearman_per_task": rhos,
            "mean_spearman": mean_rho,
            "max_acc_gap": max(acc_gaps) if acc_gaps else None,
        },
    }


def _f(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _ci(entry: dict) -> str:
    lo, hi = entry["ci95"]
    if entry["value"] is None:
        return "–"
    return f"{entry['value']:+.3f} [{_f(lo)}, {_f(hi)}]"


def _verdict(verdict: str) -> str:
    return "not measured" if verdict == "not measured" else f"**{verdict}**"


def _command(grid: dict, out_dir: str, data_dir_shown: str | None = None) -> str:
    """The ``attriblm bench`` command of ``grid`` (bench.json); ``--tasks`` / ``--methods`` only
    where the grid is not all of them. ``data_dir_shown`` replaces the recorded absolute path."""
    from attriblm.methods.registry import expand_method_names
    from attriblm.pipeline.bench import ALL_TASKS

    parts = ["attriblm bench", f"--preset {grid['preset']}", f"--model {grid['model']}"]
    if grid.get("data_dir"):
        parts.append(f"--data-dir {data_dir_shown or grid['data_dir']}")
    requested = list(grid["tasks"]) + list(grid.get("study_folders_missing", {}).values())
    if sorted(requested) != sorted(ALL_TASKS):
        parts.append(f"--tasks {','.join(requested)}")
    if list(grid["methods"]) != expand_method_names(["all"]):
        parts.append(f"--methods {','.join(grid['methods'])}")
    parts.append(f"--loss-masks {','.join(grid['loss_masks'])}")
    parts.append(f"--seed {grid['seed']} --out {out_dir}")
    return " ".join(parts)


def _metric_parts(item: dict, describe: Callable[[dict], str]) -> str:
    """``Cover +0.1 [a, b] (…) → agrees; AUPRC …; Acc (beside, not used) …``."""
    parts = []
    for metric, entry in item["numbers"]["metrics"].items():
        label = claims.METRIC_LABELS[metric]
        if metric not in item["numbers"]["verdict_metrics"]:
            label += " (beside, not used for the verdict)"
        detail = describe(entry)
        parts.append(
            f"{label} {_ci(entry)}" + (f" ({detail})" if detail else "") + f" → {entry['verdict']}"
        )
    return "; ".join(parts)


def _bootstrap_note(item: dict) -> str:
    b = item["numbers"]["bootstrap"]
    return (
        f"95% percentile bootstrap over queries ({b['n_boot']} draws, seed {b['seed']}, "
        "resampled within each task, paired across methods)"
    )


def _criterion(item: dict, claim: str) -> str:
    n = item["numbers"]
    side, c = n["side"], n["threshold"]
    other = "<" if side == ">=" else ">"
    shown = "≥" if side == ">=" else "≤"
    return (
        f"Criterion: {claim} {shown} {c:g}; per metric, agrees when the whole 95% interval is "
        f"{shown} {c:g}, does not agree when it is wholly {other} {c:g}, otherwise "
        "inconclusive; the finding agrees (does not agree) when Cover and AUPRC both do, and is "
        "inconclusive otherwise"
    )


def _repsim_line(item: dict) -> str:
    n, mask = item["numbers"], item["loss_mask"]

    def describe(entry: dict) -> str:
        if entry.get("repsim") is None or "best_influence" not in entry:
            return ""
        best = entry["best_influence"]
        return f"repsim {_f(entry['repsim'])}, best influence function {best} " + _f(
            entry["influence"][best]
        )

    return (
        "- *RepSim far ahead of influence functions on harmful / backdoor identification* "
        f"(loss mask `{mask}`; tasks {', '.join(n['tasks']) or 'none'}): repsim minus the best "
        "influence function, mean over tasks, with its "
        f"{_bootstrap_note(item)}: {_metric_parts(item, describe)}. "
        f"{_criterion(item, 'difference')}. This run {_verdict(item['verdict'])}."
    )


def _exact_line(item: dict) -> str:
    n, mask = item["numbers"], item["loss_mask"]

    def describe(entry: dict) -> str:
        if entry.get("exact") is None or entry.get("gradsim") is None:
            return ""
        return f"exact {_f(entry['exact'])}, gradsim {_f(entry['gradsim'])}"

    return (
        f"- *The exact inverse does not beat gradient similarity* (loss mask `{mask}`): exact "
        f"minus gradsim, mean over all {len(n['tasks'])} tasks, with its "
        f"{_bootstrap_note(item)}: {_metric_parts(item, describe)}. "
        f"{_criterion(item, 'difference')}. This run {_verdict(item['verdict'])}."
    )


def _math_line(item: dict) -> str:
    mask = item["loss_mask"]

    def describe(entry: dict) -> str:
        if "lowest" not in entry:
            return ""
        return f"lowest: {entry['lowest']}"

    return (
        f"- *Math is easy for every method* (loss mask `{mask}`): the lowest method's mean on "
        f"math, with its {_bootstrap_note(item)}: {_metric_parts(item, describe)}. "
        f"{_criterion(item, 'lowest method')}. This run {_verdict(item['verdict'])}."
    )


def _lissa_line(item: dict) -> str:
    n, mask = item["numbers"], item["loss_mask"]
    per_task = ", ".join(f"{t} {_f(v)}" for t, v in n["spearman_per_task"].items())
    return (
        f"- *Paper-style LiSSA ranks like gradient similarity* (loss mask `{mask}`): mean "
        f"per-query Spearman of lissa-paper vs gradsim scores {_f(n['mean_spearman'])} "
        f"({per_task}); largest Acc gap {_f(n['max_acc_gap'])}. Criterion: mean "
        f"Spearman ≥ {LISSA_SPEARMAN}. This run {_verdict(item['verdict'])}."
    )


_LINES = {
    "repsim_ahead": _repsim_line,
    "lissa_paper_like_gradsim": _lissa_line,
    "math_easy": _math_line,
    "exact_not_better": _exact_line,
}


def findings_markdown(items: list[dict]) -> str:
    """Plain-language lines, one per finding × loss mask: numbers, criterion, verdict."""
    return "\n".join(_LINES[item["finding"]](item) for item in items)


FINDINGS_TITLE = "The study's findings, checked on this run"


def bench_markdown(
    out_dir: Path | str,
    shown_dir: str,
    image: str | None = None,
    *,
    data_dir_shown: str | None = None,
    findings_title: str = FINDINGS_TITLE,
) -> str:
    """The benchmark section of ``docs/RESULTS.md``: command, compute time, tables, findings.

    :func:`bench_run_markdown` then :func:`bench_tables_markdown` (a document can put its own
    lines between the two).
    """
    return (
        bench_run_markdown(out_dir, shown_dir, data_dir_shown=data_dir_shown)
        + "\n"
        + bench_tables_markdown(out_dir, image, findings_title=findings_title)
    )


def bench_run_markdown(
    out_dir: Path | str, shown_dir: str, *, data_dir_shown: str | None = None
) -> str:
    """The command, grid size and compute time of a bench, from its ``bench.json`` and runs.

    ``shown_dir`` is the output directory as printed in the command, ``data_dir_shown`` the
    ``--data-dir`` (a study-data bench; default: the absolute path bench.json records).
    """
    out_dir = Path(out_dir)
    bench = read_json(BenchDir(out_dir).bench_json)
    grid = bench["grid"]
    seconds = compute_seconds(out_dir)
    history = bench["history"]
    lines = [
        "```",
        _command(grid, shown_dir, data_dir_shown),
        "```",
        "",
        f"Grid: {len(grid['tasks'])} tasks × {len(grid['methods'])} methods × "
        f"{len(grid['loss_masks'])} loss masks, preset `{grid['preset']}`, model "
        f"`{grid['model']}`.",
        "",
        f"Compute time recorded by the runs (2-core CPU): fine-tuning "
        f"{seconds['finetune'] / 60:.1f} min, attribution {seconds['attribute'] / 60:.1f} min, "
        f"total {seconds['total'] / 60:.1f} min.",
    ]
    for number, run in enumerate(history, start=1):
        lines.append(
            f"Invocation {number}: {run['wall_seconds'] / 60:.1f} min wall, computing "
            f"{run['computed']['finetunes']} fine-tunes and {run['computed']['runs']} "
            f"attribution runs (the rest from the cache)."
        )
    return "\n".join(lines) + "\n"


def bench_tables_markdown(
    out_dir: Path | str, image: str | None = None, *, findings_title: str = FINDINGS_TITLE
) -> str:
    """The tables of ``results.md`` and the study's findings checked on them.

    ``image`` is a relative path to a copy of ``results.png``; ``findings_title`` the heading of
    the findings (a document with two grids names each).
    """
    out_dir = Path(out_dir)
    lines = [BenchDir(out_dir).results_md.read_text(encoding="utf-8").strip(), ""]
    if image:
        lines += [f"![results]({image})", ""]
    lines += [
        f"### {findings_title}",
        "",
        "The comparative findings are decided on Cover and AUPRC, each with a 95% bootstrap "
        "interval over queries. Acc is shown beside them but not used: it asks only whether the "
        "top-1 row is relevant, so it saturates at 1.0 as soon as every query has one clearly "
        "relevant neighbour, and then cannot separate methods. A verdict is "
        "*inconclusive* when an interval contains the criterion's threshold or Cover and AUPRC "
        "disagree.",
        "",
        findings_markdown(findings(out_dir)),
    ]
    return "\n".join(lines) + "\n"
