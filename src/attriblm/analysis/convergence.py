"""Convergence (docs/DESIGN.md §7.3): attribution quality and ``‖Δθ‖`` at every epoch checkpoint.

For a fine-tune directory (``checkpoints/epoch-NNN/``, ``train_log.json``, ``config.yaml``, as
:func:`attriblm.train.finetune.finetune` writes it) each checkpoint's LoRA weights are loaded in
turn into the loaded (fine-tuned) model (:func:`attriblm.features.checkpoints.adapter_weights`;
the model's own weights are restored afterwards). At each one:

* features (per-example gradients, representations, K-FAC factors as the methods need) are
  computed on that model and every method scores the queries (``[n_query, n_train]``, larger =
  more supportive); Acc, Cover (``k = n_train / n_classes``) and AUPRC come from
  :func:`attriblm.metrics.ranking.evaluate_scores`;
* ``‖Δθ‖``: for each LoRA module the weight change ``‖(α/r) · B A‖_F``
  (:func:`attriblm.models.lora.lora_delta_norms`; ``α/r`` is peft's ``scaling``), then its mean
  and population standard deviation over modules;
* the training loss and learning rate of that epoch are read from ``train_log.json``
  (``mean_loss`` = mean of the epoch's step losses, so it lags the checkpoint's weights).

Epoch 0 (``include_init``) is the adapter before training, rebuilt as the fine-tune built it:
the base model (the loaded model with its LoRA layers removed, on a copy) wrapped by
:func:`attriblm.models.lora.add_lora` with the LoRA settings and seed of ``config.yaml``. There
``B = 0``, so ``‖Δθ‖ = 0`` and the gradients of every ``lora_A`` block are exactly zero; blocks
whose training gradients are all zero are dropped (listed in ``dropped_blocks``): they add 0 to
every gradient-based score (``g = 0``) and a relative damping ``λ_b`` could not be set for them.
Epoch 0 has no training loss (``None``).
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from attriblm.analysis._common import json_float, output_dir, pyplot, save_figure
from attriblm.data.schema import Example
from attriblm.errors import ConfigError
from attriblm.features.checkpoints import ADAPTER_FILE, adapter_weights
from attriblm.io import read_json, save_tensors, write_json
from attriblm.methods.base import FeatureSet, method_needs
from attriblm.metrics.ranking import evaluate_scores
from attriblm.models.loading import LoadedModel
from attriblm.models.lora import LoraSettings, add_lora, has_lora, lora_delta_summary
from attriblm.pipeline import plan
from attriblm.pipeline.scoring import fit_and_score, prepare_features
from attriblm.pipeline.settings import AttributeSettings
from attriblm.progress import StageProgress, no_progress
from attriblm.train.checkpoints import load_checkpoints
from attriblm.train.finetune import CONFIG_FILE, TRAIN_LOG, read_train_config

NAME = "convergence"
DEFAULT_METHODS = ("gradsim", "datainf", "lissa-paper", "repsim")
METRICS = ("acc", "cover", "auprc")


def resolve_methods(methods: Sequence[str]) -> list[str]:
    """Expand ``all``; ConfigError for methods with no per-checkpoint score: those that need
    checkpoints themselves (``tracin``) or the fine-tune's final optimizer state (``less``)."""
    whole_run = {"checkpoints", "adam-gradients"}
    return plan.resolve_methods(
        methods,
        accept=lambda cls: not whole_run & set(method_needs(cls)),
        refuse=lambda bad: (
            f"method(s) {bad} use all checkpoints or the final optimizer state at once and "
            "have no per-checkpoint score; drop them from --method"
        ),
    )


def default_settings(finetune_dir: Path | str) -> AttributeSettings:
    """:class:`AttributeSettings` with the fine-tune's template, loss mask and max length."""
    root = load_checkpoints(finetune_dir)[0].path.parent.parent
    train_settings, _ = read_train_config(root / CONFIG_FILE)
    return AttributeSettings(
        template=train_settings.template,
        loss_mask=train_settings.loss_mask,
        max_length=train_settings.max_length,
    )


def initial_adapter_state(
    loaded: LoadedModel, lora: LoraSettings, seed: int
) -> dict[str, torch.Tensor]:
    """The LoRA weights :func:`add_lora` gives the base model with ``lora`` and ``seed``.

    The base is a copy of ``loaded.model`` with its LoRA layers removed (``B`` is zero, ``A``
    drawn from ``seed``), i.e. the fine-tune's state before its first step. Keys are peft's
    adapter-file keys.
    """
    from peft import get_peft_model_state_dict

    plain = copy.deepcopy(loaded.model).base_model.unload()
    wrapped = add_lora(plain, lora, seed=seed)
    state = get_peft_model_state_dict(wrapped, save_embedding_layers=False)
    current = get_peft_model_state_dict(loaded.model, save_embedding_layers=False)
    mismatch = sorted(
        k
        for k in set(state) | set(current)
        if k not in state or k not in current or state[k].shape != current[k].shape
    )
    if mismatch:
        raise ConfigError(
            f"the fine-tune's LoRA settings ({CONFIG_FILE}) do not fit the loaded adapter: "
            f"{mismatch[0]}"
        )
    return {k: v.detach().clone() for k, v in state.items()}


@contextmanager
def _init_adapter_dir(state: dict[str, torch.Tensor]) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="attriblm-init-adapter-") as tmp:
        save_tensors(Path(tmp) / ADAPTER_FILE, state)
        yield Path(tmp)


def _drop_zero_blocks(train: FeatureSet, queries: FeatureSet) -> list[str]:
    """Remove blocks whose training gradients are all zero from both sets; return their names."""
    if not train.grads:
        return []
    dropped = [b for b, g in train.grads.items() if not bool(g.any())]
    if len(dropped) == len(train.grads):
        raise ConfigError("every training gradient is zero at this checkpoint; nothing to score")
    for b in dropped:
        train.grads.pop(b)
        if queries.grads is not None:
            queries.grads.pop(b, None)
        if train.kfac is not None:
            train.kfac.pop(b, None)
    return dropped


def _evaluate_state(
    loaded: LoadedModel,
    train: Sequence[Example],
    queries: Sequence[Example],
    names: Sequence[str],
    settings: AttributeSettings,
    n_boot: int,
    progress: StageProgress,
    label: str,
) -> dict[str, Any]:
    # one store per state: each checkpoint's weights are another model (settings.store/<label>)
    store_dir = None if settings.store is None else Path(settings.store) / label.replace(" ", "-")
    prepared = prepare_features(
        loaded, train, queries, names, settings, progress=progress, store_dir=store_dir,
        sources={"train": f"train · {label}", "queries": f"queries · {label}"},
    )  # fmt: skip
    dropped = _drop_zero_blocks(prepared.train, prepared.queries)
    scored = fit_and_score(prepared.methods, prepared.train, prepared.queries, prepared.plan)
    train_labels = [e.label for e in train]
    query_labels = [e.label for e in queries]
    results: dict[str, Any] = {}
    for name in names:
        metrics = evaluate_scores(scored.scores[name], query_labels, train_labels, n_boot=n_boot)
        results[name] = {
            key: {"value": metrics[key]["value"], "ci95": list(metrics[key]["ci95"])}
            for key in METRICS
        }
        results[name]["cover_k"] = metrics["cover_k"]
    return {
        "methods": results,
        "delta_norm": lora_delta_summary(loaded.model),
        "dropped_blocks": dropped,
    }


def run_convergence(
    loaded: LoadedModel,
    finetune_dir: Path | str,
    train: Sequence[Example],
    queries: Sequence[Example],
    out: Path | str,
    *,
    methods: Sequence[str] = DEFAULT_METHODS,
    settings: AttributeSettings | None = None,
    include_init: bool = True,
    n_boot: int = 200,
    sources: dict[str, str] | None = None,
    progress: StageProgress = no_progress,
) -> dict[str, Any]:
    """Metrics per method and ``‖Δθ‖`` at epoch 0 (optional) and every checkpoint of a fine-tune.

    Args:
        loaded: the fine-tuned model with its LoRA adapter (any of the fine-tune's adapters;
            each checkpoint's weights are swapped in and the original restored).
        finetune_dir: the fine-tune's output directory (or its ``checkpoints/``).
        train, queries: examples with labels (``variation``), in file order.
        methods: method names (``all`` = every method except ``tracin``).
        settings: template, loss mask, max length, batch size, damping, RepSim options
            (``methods`` ignored); default: the fine-tune's template, loss mask and max length.
        include_init: add epoch 0, the adapter before training (see the module docstring).
        n_boot: bootstrap resamples for the metrics' 95% intervals.

    Returns:
        ``{"epochs": [{"epoch", "checkpoint", "loss", "lr", "delta_norm": {"mean", "std",
        "max", "per_module"}, "methods": {name: {"acc", "cover", "auprc": {"value", "ci95"},
        "cover_k"}}, "dropped_blocks"}, ...], ...}``; also written to ``OUT/convergence.json``
        beside ``OUT/convergence.png``.
    """
    if not has_lora(loaded.model):
        raise ConfigError("convergence needs the fine-tuned model: load it with its adapter")
    names = resolve_methods(methods)
    checkpoints = load_checkpoints(finetune_dir)
    root = checkpoints[0].path.parent.parent
    train_settings, _ = read_train_config(root / CONFIG_FILE)
    settings = settings if settings is not None else default_settings(root)
    log = read_json(root / TRAIN_LOG)
    per_epoch = {int(e["epoch"]): e for e in log.get("epochs", [])}
    sources = {"train": "train", "queries": "queries", **(sources or {})}
    out_path = output_dir(out)
    started = time.perf_counter()

    rows: list[dict[str, Any]] = []
    if include_init:
        state = initial_adapter_state(loaded, train_settings.lora, train_settings.seed)
        with _init_adapter_dir(state) as init_dir, adapter_weights(loaded.model, init_dir):
            row = _evaluate_state(
                loaded, train, queries, names, settings, n_boot, progress, "epoch 0"
            )
        rows.append({"epoch": 0, "checkpoint": None, "loss": None, "lr": None, **row})
    for ckpt in checkpoints:
        with adapter_weights(loaded.model, ckpt.path):
            row = _evaluate_state(
                loaded, train, queries, names, settings, n_boot, progress, f"epoch {ckpt.epoch}"
            )
        entry = per_epoch.get(ckpt.epoch, {})
        rows.append(
            {
                "epoch": ckpt.epoch,
                "checkpoint": str(ckpt.path),
                "loss": json_float(entry.get("mean_loss")),
                "lr": json_float(entry.get("lr")),
                **row,
            }
        )
    report: dict[str, Any] = {
        "diagnosis": "convergence",
        "finetune": str(root),
        "model": loaded.identity.get("spec"),
        "train": sources["train"],
        "queries": sources["queries"],
        "methods": names,
        "settings": {
            "template": settings.template,
            "loss_mask": settings.loss_mask,
            "max_length": settings.max_length,
            "damping_mode": settings.damping_mode,
            "damping": settings.damping,
            "n_boot": n_boot,
            "include_init": include_init,
        },
        "delta_norm_definition": "per LoRA module ‖(α/r)·B A‖_F; mean and population std over "
        "modules",
        "loss_definition": "train_log.json epochs[].mean_loss (mean of the epoch's step losses)",
        "epoch0": "add_lora(base, config.yaml LoRA settings, seed) before training; all-zero "
        "gradient blocks dropped"
        if include_init
        else None,
        "epochs": rows,
        "wall_s": time.perf_counter() - started,
    }
    write_json(out_path / f"{NAME}.json", report)
    plot_convergence(report, out_path / f"{NAME}.png")
    return report


def plot_convergence(report: dict[str, Any], path: Path) -> Path:
    """Acc, Cover, AUPRC per method vs epoch; training loss; ``‖Δθ‖`` (mean ± std) vs epoch."""
    plt = pyplot()
    rows = report["epochs"]
    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 5, figsize=(24, 4.4))
    for ax, key, title in zip(axes[:3], METRICS, ("Acc", "Cover", "AUPRC"), strict=True):
        for name in report["methods"]:
            ys = [r["methods"][name][key]["value"] for r in rows]
            ax.plot(epochs, [float("nan") if y is None else y for y in ys], "o-", label=name)
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.set_xticks(epochs)
    axes[0].legend(fontsize=8)
    ax = axes[3]
    with_loss = [r for r in rows if r["loss"] is not None]
    ax.plot([r["epoch"] for r in with_loss], [r["loss"] for r in with_loss], "o-", color="black")
    ax.set_xlabel("epoch")
    ax.set_title("training loss (epoch mean)")
    ax.set_xticks(epochs)
    ax = axes[4]
    means = [r["delta_norm"]["mean"] for r in rows]
    stds = [r["delta_norm"]["std"] for r in rows]
    ax.errorbar(epochs, means, yerr=stds, fmt="o-", capsize=3, color="tab:red")
    ax.set_xlabel("epoch")
    ax.set_title("‖Δθ‖ = ‖(α/r)·BA‖_F, mean ± std over modules")
    ax.set_xticks(epochs)
    fig.tight_layout()
    return save_figure(fig, path)
