"""Layer sweep: RepT and RepSim attribution quality at every layer of the fine-tuned model.

Which layer to read is RepT's one free choice (the follow-up picks it per model). This computes
every layer's RepT features in one pass per batch (:func:`attriblm.features.rept.rept_features`
with all layers: one forward with ``output_hidden_states`` and one backward), then scores the
queries per layer with

* ``rept``: the cosine of ``[h_ℓ ; ∂L/∂h_ℓ]`` at the last prompt token
  (:mod:`attriblm.methods.rept`);
* ``repsim``: the cosine of ``h_ℓ`` alone, the first half of the same feature, i.e. RepSim with
  ``--repsim-layer ℓ`` (layer ``L`` is after the final norm, RepSim's default).

and reports Acc, Cover (``k = n_train / n_classes``) and AUPRC with bootstrap intervals
(:func:`attriblm.metrics.ranking.evaluate_scores`). Writes ``OUT/layer_sweep.json`` and
``OUT/layer_sweep.png``. Layers are 1-based (``hidden_states`` indices); the loss is the
response loss whatever mask the fine-tune used.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from attriblm.analysis._common import json_float, output_dir, pyplot, save_figure
from attriblm.data.schema import Example
from attriblm.errors import ConfigError
from attriblm.features.rept import n_layers, resolve_layer
from attriblm.io import write_json
from attriblm.methods.base import FeatureSet
from attriblm.metrics.ranking import evaluate_scores
from attriblm.models.loading import LoadedModel
from attriblm.pipeline.features import FeatureBuilder, open_store
from attriblm.pipeline.plan import FeaturePlan, create_methods
from attriblm.pipeline.settings import AttributeSettings
from attriblm.progress import StageProgress, no_progress

NAME = "layer_sweep"
METHODS = ("rept", "repsim")
METRICS = ("acc", "cover", "auprc")
LABELS = {"acc": "Acc (top-1)", "cover": "Cover", "auprc": "AUPRC"}


def resolve_layers(layers: Sequence[int] | None, total: int) -> list[int]:
    """``layers`` as sorted ``hidden_states`` indices (``-1`` → ``total``); default all."""
    if not layers:
        return list(range(1, total + 1))
    return sorted({resolve_layer(int(layer), total, "--layers") for layer in layers})


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    out = {
        key: {
            "value": json_float(metrics[key]["value"]),
            "ci95": [json_float(v) for v in metrics[key]["ci95"]],
        }
        for key in METRICS
    }
    out["cover_k"] = metrics["cover_k"]
    return out


def _best_layer(rows: list[dict[str, Any]], method: str, metric: str) -> int | None:
    """The layer with the highest value of ``metric`` for ``method`` (the first on a tie)."""
    scored = [(r[method][metric]["value"], r["layer"]) for r in rows]
    scored = [(v, layer) for v, layer in scored if v is not None]
    return max(scored, key=lambda item: item[0])[1] if scored else None


def run_layer_sweep(
    loaded: LoadedModel,
    train: Sequence[Example],
    queries: Sequence[Example],
    out: Path | str,
    *,
    settings: AttributeSettings | None = None,
    layers: Sequence[int] | None = None,
    n_boot: int = 200,
    sources: dict[str, str] | None = None,
    progress: StageProgress = no_progress,
) -> dict[str, Any]:
    """Acc / Cover / AUPRC of ``rept`` and ``repsim`` per layer; writes JSON and PNG (module doc).

    ``settings`` supplies the template, max length and batch size (defaults: the study's);
    ``layers`` are 1-based (``-1`` = last; default: every layer). Every example needs a label.
    Returns the report written to ``OUT/layer_sweep.json``.
    """
    settings = settings if settings is not None else AttributeSettings()
    sources = {"train": "train", "queries": "queries", **(sources or {})}
    for which, examples in (("train", train), ("queries", queries)):
        missing = [i for i, e in enumerate(examples) if e.label is None]
        if missing:
            raise ConfigError(
                f"{sources[which]}: row {missing[0] + 1} has no label; the layer sweep scores "
                "every layer against the labels (--label-field)"
            )
    if n_boot < 0:
        raise ConfigError(f"--n-boot must be >= 0, got {n_boot}")
    total = n_layers(loaded.model)
    chosen = resolve_layers(layers, total)
    out_path = output_dir(out)
    started = time.perf_counter()
    store = open_store(
        None if settings.store is None else Path(settings.store).expanduser(), loaded, settings
    )
    methods = create_methods(list(METHODS), settings)
    plan = FeaturePlan.from_methods(methods, settings)
    builder = FeatureBuilder(loaded, settings, store, plan, progress=progress)
    train_f, _ = builder.rept_layers("train", train, sources["train"], chosen)
    query_f, _ = builder.rept_layers("queries", queries, sources["queries"], chosen)
    train_labels = [e.label for e in train]
    query_labels = [e.label for e in queries]
    rept, repsim = methods["rept"], methods["repsim"]
    rows = []
    tick = progress("scoring layers", len(chosen))
    for layer in chosen:
        t, q = train_f[layer], query_f[layer]
        half = t.shape[1] // 2
        scores = {
            "rept": rept.fit(FeatureSet(rept=t)).score(FeatureSet(rept=q)),
            "repsim": repsim.fit(FeatureSet(reprs=t[:, :half])).score(
                FeatureSet(reprs=q[:, :half])
            ),
        }
        row: dict[str, Any] = {"layer": layer}
        for name, output in scores.items():
            metrics = evaluate_scores(output.scores, query_labels, train_labels, n_boot=n_boot)
            row[name] = _summary(metrics)
        row["rept_parts"] = scores["rept"].info["parts"]
        rows.append(row)
        tick(1)
    best = {name: {key: _best_layer(rows, name, key) for key in METRICS} for name in METHODS}
    report = {
        "name": NAME,
        "model": loaded.identity.get("spec"),
        "adapter": loaded.identity.get("adapter"),
        "train": sources["train"],
        "queries": sources["queries"],
        "n_train": len(train),
        "n_query": len(queries),
        "n_layers": total,
        "layers": chosen,
        "layer_rule": "1-based hidden_states index; the last layer is after the final norm",
        "position": "last prompt token",
        "loss_mask": "response",
        "template": settings.template,
        "max_length": settings.max_length,
        "n_boot": n_boot,
        "rows": rows,
        "best_layer": best,
        "wall_s": time.perf_counter() - started,
    }
    write_json(out_path / f"{NAME}.json", report)
    _plot(report, out_path / f"{NAME}.png")
    return report


def _plot(report: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 3.4), sharex=True)
    layers = [row["layer"] for row in report["rows"]]
    for ax, key in zip(axes, METRICS, strict=True):
        for name, style in zip(METHODS, ("-o", "--s"), strict=True):
            values = [row[name][key]["value"] for row in report["rows"]]
            low = [row[name][key]["ci95"][0] for row in report["rows"]]
            high = [row[name][key]["ci95"][1] for row in report["rows"]]
            nan = float("nan")
            ax.plot(layers, [nan if v is None else v for v in values], style, ms=3, label=name)
            if all(v is not None for v in (*low, *high)):
                ax.fill_between(layers, low, high, alpha=0.15)
        ax.set_title(LABELS[key])
        ax.set_xlabel("layer")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(
        f"RepT vs RepSim by layer · {report['model']} · {report['n_train']} train, "
        f"{report['n_query']} queries",
        fontsize=10,
    )
    fig.tight_layout()
    save_figure(fig, path)
