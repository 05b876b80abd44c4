"""The docs/RESULTS.md table of a finished `attriblm trace` run (generations traced to train rows).

One row per method: the follow-up's pooled top-k numbers over the kept generations
(precision@k and auPRC for each k that ``evaluate --target-label`` computed;
attriblm.metrics.pooled) beside the per-query Acc and Cover (docs/DESIGN.md §4), and one line
saying how many prompts the detector kept. Read through :class:`~attriblm.rundir.RunDir`;
nothing is recomputed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from attriblm.errors import DataError
from attriblm.io import read_json
from attriblm.rundir import RunDir


def _value(entry: Any) -> float | None:
    """A metric's point value (metrics.json stores ``{"value": ..., "ci95": ...}``)."""
    if isinstance(entry, dict):
        entry = entry.get("value")
    return None if entry is None else float(entry)


def _f(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def trace_summary(run_dir: Path | str) -> dict[str, Any]:
    """Kept / total generations, the detector, target label, pooled k values and per-method rows.

    DataError naming the file when the run has no generations.jsonl or no metrics.json with
    pooled numbers (run ``attriblm trace --target-label LABEL``).
    """
    run = RunDir(run_dir)
    if not run.has_generations():
        raise DataError(f"{run.generations}: not a trace run (no generations)")
    if not run.metrics_json.is_file():
        raise DataError(f"{run.metrics_json}: missing; trace with --target-label to evaluate")
    generations = run.read_generations()
    metrics = read_json(run.metrics_json)
    methods = metrics["methods"]
    pooled_ks = sorted(
        {int(k) for m in methods.values() for k in (m.get("pooled") or {}).get("k", {})}
    )
    if not pooled_ks:
        raise DataError(f"{run.metrics_json}: no pooled top-k numbers (--target-label)")
    rows = {}
    for name, m in methods.items():
        pooled = m["pooled"]["k"]
        rows[name] = {
            "pooled": {k: pooled.get(str(k), {}) for k in pooled_ks},
            "acc": _value(m.get("acc")),
            "cover": _value(m.get("cover")),
            "cover_k": m.get("cover_k"),
        }
    info = run.read_info()
    first = next(iter(methods.values()))
    return {
        "n_prompts": len(generations),
        "n_kept": sum(1 for g in generations if g.get("kept")),
        "detector": (info.get("trace") or {}).get("detect"),
        "target_label": metrics.get("target_label"),
        "n_target": first["pooled"].get("n_target"),
        "n_train": first.get("n_train"),
        "pooled_ks": pooled_ks,
        "methods": rows,
    }


def trace_markdown(run_dir: Path | str) -> str:
    """The table of :func:`trace_summary` as Markdown (rows = methods)."""
    s = trace_summary(run_dir)
    head = [f"P@{k} | auPRC@{k}" for k in s["pooled_ks"]]
    lines = [
        f"The detector ({s['detector'] or 'see config.yaml'}) kept {s['n_kept']} of "
        f"{s['n_prompts']} generations; each kept one is a query. Target label "
        f"`{s['target_label']}`: {s['n_target']} of {s['n_train']} training rows.",
        "",
        "| method | " + " | ".join(head) + " | Acc | Cover |",
        "|---|" + "---|---|" * len(s["pooled_ks"]) + "---|---|",
    ]
    for name, row in s["methods"].items():
        cells = []
        for k in s["pooled_ks"]:
            entry = row["pooled"][k]
            cells += [_f(entry.get("precision")), _f(entry.get("auprc"))]
        cover = _f(row["cover"]) + (f" (k={row['cover_k']})" if row["cover_k"] else "")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {_f(row['acc'])} | {cover} |")
    return "\n".join(lines) + "\n"
