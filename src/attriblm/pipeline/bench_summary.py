"""Summaries of a finished ``bench`` directory: compute time and the study's findings, measured.

Everything here is read from the files a bench run wrote (``results.csv``, each task's
``metrics.json``, the cached fine-tunes' ``train_log.json`` and runs' ``run.json`` and score
files), so a document built from it carries no hand-typed number.

The study's qualitative findings checked here (arXiv 2409.19998):

- ``repsim_ahead``: representation similarity (RepSim) is far ahead of the influence functions on
  harmful-data identification and backdoor detection;
- ``lissa_paper_like_gradsim``: the paper's LiSSA ranks training rows like gradient similarity;
- ``math_easy``: class attribution on math is easy for every method;
- ``exact_not_better``: the exact inverse (an influence function without approximation error)
  does not beat Hessian-free gradient similarity: mean Cover over all tasks, exact ≤ gradsim.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from attriblm.errors import AttriblmError
from attriblm.io import load_tensors, read_json

INFLUENCE_METHODS = ("datainf", "lissa-paper", "lissa", "exact", "cg", "kfac", "ekfac")
IDENTIFICATION_PREFIXES = ("harmful", "backdoor")
# "Far ahead" / "easy" thresholds used to say agree / disagree; stated in the document.
AHEAD_MARGIN = 0.2
EASY_ACC = 0.8


def read_results(out_dir: Path | str) -> list[dict]:
    """``results.csv`` rows with numeric fields as floats (``None`` where empty)."""
    path = Path(out_dir) / "results.csv"
    if not path.is_file():
        raise AttriblmError(f"{path}: missing; run `attriblm bench` first")
    with path.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        for key, value in row.items():
            if key not in ("task", "loss_mask", "method"):
                row[key] = None if value in ("", None) else float(value)
    return rows


def _run_dir(out_dir: Path, report: dict) -> Path:
    return out_dir / "cache" / "runs" / Path(report["run"]).name


def _finetune_dir(out_dir: Path, report: dict) -> Path:
    return out_dir / "cache" / "finetune" / Path(report["finetune"]).name


def compute_seconds(out_dir: Path | str) -> dict:
    """Fine-tune and attribution seconds of every task × loss mask, as recorded when computed.

    Returns ``{"finetune": s, "attribute": s, "total": s, "per_run": [{task, loss_mask, ...}]}``;
    this is the time an uncached ``bench`` spends on compute (building data and evaluating add
    a few seconds).
    """
    out_dir = Path(out_dir)
    per_run = []
    for metrics_path in sorted(out_dir.glob("*/*/metrics.json")):
        report = read_json(metrics_path)
        log = read_json(_finetune_dir(out_dir, report) / "train_log.json")
        run = read_json(_run_dir(out_dir, report) / "run.json")
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


def findings(out_dir: Path | str) -> list[dict]:
    """Each study finding, per loss mask: the measured numbers and whether this run agrees.

    Each entry: ``{"finding", "loss_mask", "agrees": bool | None, "numbers": {...}}``;
    ``agrees`` is ``None`` when the grid lacks the tasks or methods the finding needs.
    """
    out_dir = Path(out_dir)
    rows = read_results(out_dir)
    index = {(r["task"], r["loss_mask"], r["method"]): r for r in rows}
    tasks = sorted({r["task"] for r in rows})
    methods = sorted({r["method"] for r in rows})
    results = []
    for mask in sorted({r["loss_mask"] for r in rows}):
        ident = [t for t in tasks if t.startswith(IDENTIFICATION_PREFIXES)]
        influence = [m for m in INFLUENCE_METHODS if m in methods]
        repsim = _mean([index.get((t, mask, "repsim"), {}).get("acc") for t in ident])
        per_if = {
            m: _mean([index.get((t, mask, m), {}).get("acc") for t in ident]) for m in influence
        }
        best_if = max((v for v in per_if.values() if v is not None), default=None)
        agrees = None if repsim is None or best_if is None else repsim >= best_if + AHEAD_MARGIN
        results.append(
            {
                "finding": "repsim_ahead",
                "loss_mask": mask,
                "agrees": agrees,
                "numbers": {"tasks": ident, "repsim_acc": repsim, "influence_acc": per_if},
            }
        )
        rhos, acc_gaps = {}, []
        for task in tasks:
            if (task, mask, "lissa-paper") not in index or (task, mask, "gradsim") not in index:
                continue
            report = read_json(out_dir / task / mask / "metrics.json")
            scores = _run_dir(out_dir, report) / "scores"
            lissa = load_tensors(scores / "lissa-paper.safetensors")["scores"].double().numpy()
            grad = load_tensors(scores / "gradsim.safetensors")["scores"].double().numpy()
            rhos[task] = mean_rank_agreement(lissa, grad)
            lissa_acc = index[(task, mask, "lissa-paper")]["acc"]
            grad_acc = index[(task, mask, "gradsim")]["acc"]
            if lissa_acc is not None and grad_acc is not None:
                acc_gaps.append(abs(lissa_acc - grad_acc))
        mean_rho = _mean(list(rhos.values()))
        results.append(
            {
                "finding": "lissa_paper_like_gradsim",
                "loss_mask": mask,
                "agrees": None if mean_rho is None else mean_rho >= 0.9,
                "numbers": {
                    "spearman_per_task": rhos,
                    "mean_spearman": mean_rho,
                    "max_acc_gap": max(acc_gaps) if acc_gaps else None,
                },
            }
        )
        math_acc = {
            m: index[("math", mask, m)]["acc"] for m in methods if ("math", mask, m) in index
        }
        results.append(
            {
                "finding": "math_easy",
                "loss_mask": mask,
                "agrees": None if not math_acc else min(math_acc.values()) >= EASY_ACC,
                "numbers": {"acc": math_acc, "min_acc": min(math_acc.values(), default=None)},
            }
        )
        covers = {
            m: _mean([index.get((t, mask, m), {}).get("cover") for t in tasks])
            for m in ("exact", "gradsim")
        }
        results.append(
            {
                "finding": "exact_not_better",
                "loss_mask": mask,
                "agrees": None if None in covers.values() else covers["exact"] <= covers["gradsim"],
                "numbers": {"tasks": tasks, "mean_cover": covers},
            }
        )
    return results


def _f(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _verdict(agrees: bool | None) -> str:
    return {True: "**agrees**", False: "**does not agree**", None: "not measured"}[agrees]


def _command(grid: dict, out_dir: str) -> str:
    parts = ["attriblm bench", f"--preset {grid['preset']}", f"--model {grid['model']}"]
    if grid.get("data_dir"):
        parts.append(f"--data-dir {grid['data_dir']}")
    parts.append(f"--loss-masks {','.join(grid['loss_masks'])}")
    parts.append(f"--seed {grid['seed']} --out {out_dir}")
    return " ".join(parts)


def findings_markdown(items: list[dict]) -> str:
    """Plain-language lines, one per finding × loss mask, with the measured numbers."""
    lines = []
    for item in items:
        n, mask = item["numbers"], item["loss_mask"]
        if item["finding"] == "repsim_ahead":
            per_if = ", ".join(f"{m} {_f(v)}" for m, v in n["influence_acc"].items())
            lines.append(
                f"- *RepSim far ahead of influence functions on harmful / backdoor "
                f"identification* (loss mask `{mask}`): mean Acc over {', '.join(n['tasks'])}: "
                f"repsim {_f(n['repsim_acc'])}; {per_if}. Criterion: repsim ≥ best influence "
                f"function + {AHEAD_MARGIN}. This run {_verdict(item['agrees'])}."
            )
        elif item["finding"] == "lissa_paper_like_gradsim":
            per_task = ", ".join(f"{t} {_f(v)}" for t, v in n["spearman_per_task"].items())
            lines.append(
                f"- *Paper-style LiSSA ranks like gradient similarity* (loss mask `{mask}`): mean "
                f"per-query Spearman of lissa-paper vs gradsim scores {_f(n['mean_spearman'])} "
                f"({per_task}); largest Acc gap {_f(n['max_acc_gap'])}. Criterion: mean "
                f"Spearman ≥ 0.9. This run {_verdict(item['agrees'])}."
            )
        elif item["finding"] == "math_easy":
            accs = ", ".join(f"{m} {_f(v)}" for m, v in n["acc"].items())
            lines.append(
                f"- *Math is easy for every method* (loss mask `{mask}`): Acc {accs}; minimum "
                f"{_f(n['min_acc'])}. Criterion: every method ≥ {EASY_ACC}. This run "
                f"{_verdict(item['agrees'])}."
            )
        elif item["finding"] == "exact_not_better":
            covers = n["mean_cover"]
            lines.append(
                f"- *The exact inverse does not beat gradient similarity* (loss mask `{mask}`): "
                f"mean Cover over all {len(n['tasks'])} tasks: exact {_f(covers['exact'])}, "
                f"gradsim {_f(covers['gradsim'])}. Criterion: exact ≤ gradsim. This run "
                f"{_verdict(item['agrees'])}."
            )
    return "\n".join(lines)


def bench_markdown(out_dir: Path | str, shown_dir: str, image: str | None = None) -> str:
    """The benchmark section of ``docs/RESULTS.md``: command, compute time, tables, findings.

    ``shown_dir`` is the output directory as printed in the command; ``image`` a relative path
    to a copy of ``results.png``.
    """
    out_dir = Path(out_dir)
    bench = read_json(out_dir / "bench.json")
    grid = bench["grid"]
    seconds = compute_seconds(out_dir)
    history = bench["history"]
    lines = [
        "```",
        _command(grid, shown_dir),
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
    lines += ["", (out_dir / "results.md").read_text(encoding="utf-8").strip(), ""]
    if image:
        lines += [f"![results]({image})", ""]
    lines += [
        "### The study's findings, checked on this run",
        "",
        findings_markdown(findings(out_dir)),
    ]
    return "\n".join(lines) + "\n"
