"""The public Python API: load, fine-tune, attribute, trace, evaluate. The CLI is a layer over it.

Typical use (see README "Python API")::

    import attriblm
    model = attriblm.load_model("default")
    train = attriblm.load_examples("data.jsonl")
    ft = attriblm.finetune(model, train, "ft", epochs=3)      # model now carries the adapter
    run = attriblm.attribute(model, train, queries, "run", methods=["gradsim", "exact"])
    report = attriblm.evaluate(run.out_dir)
    traced = attriblm.trace(model, train, ["What is gold's symbol?"], "trace", methods=["rept"],
                            detect="contains:Ag", target_label="planted")

Scores are ``[n_query, n_train]`` float32, larger = more supportive (the study's influence is the
negative of a gradient method's score).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from attriblm.data.schema import Example
from attriblm.errors import ConfigError
from attriblm.models.loading import LoadedModel
from attriblm.pipeline.attribute import AttributeSettings, AttributionRun
from attriblm.pipeline.trace import TraceRun, TraceSettings
from attriblm.train.finetune import FinetuneResult, TrainSettings


def _settings(cls, base, options: dict[str, Any], what: str):
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"unknown {what} option(s) {unknown}; known: {sorted(known)}")
    return replace(base if base is not None else cls(), **options)


def finetune(
    model: LoadedModel,
    examples: Sequence[Example],
    out: Path | str,
    *,
    settings: TrainSettings | None = None,
    **options: Any,
) -> FinetuneResult:
    """LoRA-fine-tune ``model`` in place on ``examples``; adapter and per-epoch checkpoints in
    ``out``. ``options`` override :class:`TrainSettings` fields (``epochs``, ``lr``, ...)."""
    from attriblm.train.finetune import finetune as run

    return run(model, examples, _settings(TrainSettings, settings, options, "finetune"), out)


def attribute(
    model: LoadedModel,
    train: Sequence[Example],
    queries: Sequence[Example],
    out: Path | str,
    *,
    methods: Sequence[str] = ("all",),
    settings: AttributeSettings | None = None,
    overwrite: bool = False,
    **options: Any,
) -> AttributionRun:
    """Score every query against every training example; writes the run directory ``out``.

    ``methods``: names from :func:`available_methods` or ``"all"``; ``options`` override
    :class:`AttributeSettings` fields (``loss_mask``, ``damping``, ...). ``overwrite`` replaces
    an earlier run at ``out`` (otherwise that is an OutputError). Returns the scores per method,
    each ``[n_query, n_train]``.
    """
    from attriblm.pipeline.attribute import attribute as run

    resolved = _settings(AttributeSettings, settings, {**options, "methods": list(methods)}, "")
    return run(model, train, queries, resolved, out, overwrite=overwrite)


def trace(
    model: LoadedModel,
    train: Sequence[Example],
    prompts: Sequence[str],
    out: Path | str,
    *,
    methods: Sequence[str] = ("rept",),
    detect: str = "all",
    target_label: str | None = None,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    seed: int = 0,
    gen_batch_size: int = 16,
    settings: AttributeSettings | None = None,
    **options: Any,
) -> TraceRun:
    """Let ``model`` answer ``prompts``, keep the answers ``detect`` flags, attribute them.

    ``detect``: ``all`` | ``refusal`` | ``no-refusal`` | ``contains:TEXT`` | ``regex:PATTERN``.
    With ``target_label`` the run is evaluated (relevance = train label == target). ``options``
    override :class:`AttributeSettings` fields. Writes the run directory ``out`` (with
    ``generations.jsonl``); returns the generations, the attribution and the metrics.
    """
    from attriblm.pipeline.trace import trace as run

    resolved = _settings(AttributeSettings, settings, {**options, "methods": list(methods)}, "")
    trace_settings = TraceSettings(
        detect=detect,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        seed=seed,
        gen_batch_size=gen_batch_size,
        target_label=target_label,
    )
    return run(model, train, prompts, resolved, trace_settings, out)


def evaluate(run_dir: Path | str, *, k: int | None = None, target_label: str | None = None) -> dict:
    """Acc, Cover, AUPRC, AUROC, P@k, R@k per method of a run; also writes ``metrics.json``.

    ``target_label`` adds the pooled top-k precision and auPRC for that label.
    """
    from attriblm.pipeline.evaluate import evaluate_run

    return evaluate_run(run_dir, k=k, target_label=target_label)
