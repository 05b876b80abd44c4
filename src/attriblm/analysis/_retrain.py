"""Helpers shared by the retraining diagnoses (Δθ, subset retraining, counterfactual).

* :func:`fresh_finetune`: a fresh LoRA adapter trained on a copy of a plain base model (the
  base itself is never modified), so one loaded base serves many retrainings.
* :func:`score_methods`: score matrices ``[n_query, n_train]`` (larger = more supportive) of
  several methods on one fine-tuned model, features computed once (the attribution path).
* :func:`query_losses`: the training objective per query (``per_example_loss``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from attriblm.data.schema import Example
from attriblm.errors import ConfigError
from attriblm.io import read_json
from attriblm.methods.base import method_needs
from attriblm.methods.registry import get_method_class
from attriblm.models.loading import LoadedModel
from attriblm.models.lora import add_lora, has_lora
from attriblm.models.loss import model_per_example_loss
from attriblm.pipeline.plan import resolve_methods  # noqa: F401  (the diagnoses' one)
from attriblm.pipeline.scoring import fit_and_score, prepare_features
from attriblm.pipeline.settings import AttributeSettings
from attriblm.progress import StageProgress, no_progress, step_callback
from attriblm.train.finetune import TRAIN_LOG, TrainSettings, finetune

DEFAULT_METHODS = ("gradsim", "datainf", "lissa-paper", "repsim")


def check_base(base: LoadedModel) -> None:
    """ConfigError unless ``base`` is a plain model (fresh adapters are added to copies)."""
    if has_lora(base.model):
        raise ConfigError(
            "this diagnosis fine-tunes fresh adapters: load the plain base model (no --adapter)"
        )


def copy_base(base: LoadedModel) -> LoadedModel:
    """A deep copy of the base model sharing the tokenizer (identity copied)."""
    return LoadedModel(
        model=copy.deepcopy(base.model), tokenizer=base.tokenizer, identity=dict(base.identity)
    )


def fresh_finetune(
    base: LoadedModel,
    examples: Sequence[Example],
    settings: TrainSettings,
    out_dir: Path | str,
    *,
    data_source: str = "<examples>",
    progress: StageProgress | None = None,
) -> tuple[LoadedModel, list[float]]:
    """Fine-tune a fresh adapter on a copy of ``base``; ``(fine-tuned model, epoch mean losses)``.

    ``settings.epochs == 0`` is allowed: the copy is wrapped by :func:`add_lora` (``B = 0``, the
    base function) and not trained; nothing is written and the losses are empty. ``progress``
    gets one bar, ``fine-tune · <data_source>``, advanced per optimiser step.
    """
    loaded = copy_base(base)
    if settings.epochs == 0:
        settings.lora.validate()
        loaded.model = add_lora(loaded.model, settings.lora, seed=settings.seed)
        loaded.model.eval()
        return loaded, []
    on_step = None if progress is None else step_callback(progress, f"fine-tune · {data_source}")
    result = finetune(
        loaded, examples, settings, out_dir, data_source=data_source, progress=on_step
    )
    log = read_json(result.out_dir / TRAIN_LOG)
    return loaded, [float(e["mean_loss"]) for e in log["epochs"]]


def retrain_settings(
    train_settings: TrainSettings | None,
    settings: AttributeSettings | None,
    names: Sequence[str],
) -> tuple[TrainSettings, AttributeSettings]:
    """``(fine-tuning settings, attribution settings)`` of a retraining diagnosis.

    ``train_settings`` (default :class:`TrainSettings`) is validated; ``settings`` (default
    :class:`AttributeSettings`) is copied with ``methods=names`` and the fine-tunes' own template,
    loss mask and max length.
    """
    train_settings = train_settings if train_settings is not None else TrainSettings()
    train_settings.validate()
    settings = replace(
        settings if settings is not None else AttributeSettings(),
        methods=names,
        template=train_settings.template,
        loss_mask=train_settings.loss_mask,
        max_length=train_settings.max_length,
    )
    return train_settings, settings


def score_methods(
    loaded: LoadedModel,
    train: Sequence[Example],
    queries: Sequence[Example],
    names: Sequence[str],
    settings: AttributeSettings,
    *,
    checkpoints: Sequence[Any] | None = None,
    progress: StageProgress = no_progress,
    store_dir: Path | str | None = None,
) -> dict[str, torch.Tensor]:
    """``{method: scores [n_query, n_train] float32}`` on ``loaded`` (larger = more supportive).

    The attribution path (:func:`attriblm.pipeline.scoring.prepare_features`, then each method
    fitted and scored): features once for all methods, every ``settings`` field honoured;
    ``checkpoints`` (the fine-tune's, :func:`attriblm.train.checkpoints.load_checkpoints`) are
    needed only by ``tracin``. ``store_dir`` (default ``settings.store``) keeps the features.
    """
    needs = {kind for m in names for kind in method_needs(get_method_class(m))}
    if "checkpoints" in needs and not checkpoints:
        raise ConfigError("method 'tracin' needs the fine-tune's checkpoints")
    prepared = prepare_features(
        loaded, train, queries, names, settings, checkpoints=checkpoints, progress=progress,
        store_dir=store_dir,
    )  # fmt: skip
    scored = fit_and_score(prepared.methods, prepared.train, prepared.queries, prepared.plan)
    return {name: scores.cpu() for name, scores in scored.scores.items()}


@torch.no_grad()
def query_losses(
    loaded: LoadedModel,
    queries: Sequence[Example],
    settings: TrainSettings,
    batch_size: int = 16,
) -> torch.Tensor:
    """``[n_query]`` float64: each query's training objective (token-mean loss over its loss
    tokens, ``settings``' template, loss mask and max length) under ``loaded`` in eval mode."""
    from attriblm.data.tokenize import collate, encode_examples

    encoded = encode_examples(
        queries,
        loaded.tokenizer,
        template=settings.template,
        loss_mask=settings.loss_mask,
        max_length=settings.max_length,
        source="queries",
    )
    model = loaded.model
    model.eval()
    pad = loaded.tokenizer.pad_token_id
    pad = pad if pad is not None else loaded.tokenizer.eos_token_id
    out = []
    for start in range(0, len(encoded), batch_size):
        batch = collate(encoded[start : start + batch_size], int(pad))
        out.append(model_per_example_loss(model, batch, use_cache=False).double().cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)
