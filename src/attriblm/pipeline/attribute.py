"""Attribute queries to training examples with one or more methods and write a run directory.

Run directory (DESIGN §2)::

    config.yaml                  resolved settings, enough to repeat the run
    run.json                     versions, wall time per stage, per-method info (λ per block)
    scores/<method>.safetensors  tensor ``scores`` [n_query, n_train] float32, larger = supportive
    factors/<method>.safetensors fitted K-FAC / EK-FAC eigenbases and eigenvalues (train side;
                                 reuse with ``AttributeSettings.factors`` / ``--factors``)
    topk.jsonl                   per method and query: the top-k training rows (index, score, label)
    data/{train,queries}.jsonl   the examples in file order (labels for ``evaluate``)

The directory is built in a temporary sibling and moved into place only when complete.
"""

from __future__ import annotations

import platform
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from attriblm import __version__
from attriblm.config import RESOLVED_KEY
from attriblm.data.schema import Example
from attriblm.data.templates import check_same_formatting, check_template
from attriblm.data.tokenize import check_loss_mask, encode_examples, encode_prompts
from attriblm.errors import ConfigError
from attriblm.features.checkpoints import checkpoint_gradients
from attriblm.features.gradients import per_example_gradients
from attriblm.features.kfac import KFACCollector
from attriblm.features.representations import representations
from attriblm.io import save_tensors, staged_directory, write_json, write_jsonl, write_yaml
from attriblm.methods.base import AttributionMethod, FeatureSet, method_needs
from attriblm.methods.damping import Damping
from attriblm.methods.registry import create_method, expand_method_names, get_method_class
from attriblm.models.loading import LoadedModel
from attriblm.progress import StageProgress
from attriblm.train.checkpoints import Checkpoint, discover_checkpoints, load_checkpoints


@dataclass
class AttributeSettings:
    """Everything that decides an attribution run's numbers (saved as ``config.yaml``)."""

    methods: list[str] = field(default_factory=lambda: ["all"])
    template: str = "llama2"
    loss_mask: str = "response"
    max_length: int = 128
    batch_size: int = 16
    damping_mode: str = "relative"
    damping: float = 0.1
    repsim_layer: int = -1
    repsim_pooling: str = "last"
    topk: int = 10
    checkpoints: str | None = None
    factors: str | None = None


@dataclass
class AttributionRun:
    """What :func:`attribute` produced: scores per method (``[n_query, n_train]``), run info."""

    out_dir: Path
    scores: dict[str, torch.Tensor]
    info: dict


def _no_progress(_description: str, _total: int) -> Callable[[int], None]:
    return lambda _n: None


def _versions() -> dict[str, str]:
    import peft
    import transformers

    return {
        "attriblm": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "python": platform.python_version(),
    }


def _encode_with_warning(examples, loaded, settings, source):
    encoded = encode_examples(
        examples,
        loaded.tokenizer,
        template=settings.template,
        loss_mask=settings.loss_mask,
        max_length=settings.max_length,
        source=source,
    )
    truncated = sum(e.truncated for e in encoded)
    if truncated:
        warnings.warn(
            f"{source}: {truncated} of {len(encoded)} examples truncated to "
            f"max_length={settings.max_length}",
            stacklevel=3,
        )
    return encoded, truncated


def compute_features(
    loaded: LoadedModel,
    examples: Sequence[Example],
    settings: AttributeSettings,
    *,
    need_grads: bool,
    need_reprs: bool,
    source: str,
    need_kfac: bool = False,
    checkpoints: Sequence[Checkpoint] | None = None,
    progress: StageProgress = _no_progress,
    timings: dict[str, float] | None = None,
) -> tuple[FeatureSet, int]:
    """Per-example LoRA gradients, K-FAC factors, per-checkpoint gradients, representations.

    ``need_kfac`` collects the K-FAC factors (:mod:`attriblm.features.kfac`) in the same
    forward/backward pass as the gradients (so it implies gradients); ``checkpoints`` adds one
    gradient set per checkpoint and their learning rates (TracIn). Returns the feature set and
    the number of truncated examples.
    """
    timings = {} if timings is None else timings
    pad_id = loaded.tokenizer.pad_token_id
    grads, reprs, truncated, kfac = None, None, 0, None
    ckpt_grads, ckpt_lrs = None, None
    encoded = None
    row_names = [f"{source} row {i + 1}" for i in range(len(examples))]
    if need_grads or need_kfac or checkpoints:
        encoded, truncated = _encode_with_warning(examples, loaded, settings, source)
    if need_grads or need_kfac:
        start = time.perf_counter()
        collector = KFACCollector(loaded.model) if need_kfac else None
        try:
            grads = per_example_gradients(
                loaded.model,
                encoded,
                pad_token_id=pad_id,
                batch_size=settings.batch_size,
                progress=progress(f"gradients · {source}", len(encoded)),
                names=row_names,
                on_batch=None if collector is None else collector.set_batch,
            )
            if collector is not None:
                kfac = collector.factors()
        finally:
            if collector is not None:
                collector.close()
        timings[f"gradients:{source}"] = time.perf_counter() - start
    if checkpoints:
        start = time.perf_counter()
        ckpt_grads = checkpoint_gradients(
            loaded.model,
            [c.path for c in checkpoints],
            encoded,
            pad_token_id=pad_id,
            batch_size=settings.batch_size,
            progress=lambda c: progress(
                f"checkpoint {c + 1}/{len(checkpoints)} gradients · {source}", len(encoded)
            ),
            names=row_names,
            current_gradients=grads,
        )
        ckpt_lrs = [c.lr for c in checkpoints]
        timings[f"checkpoint_gradients:{source}"] = time.perf_counter() - start
    if need_reprs:
        # one token over the limit shows which prompts get left-truncated (never silently)
        prompt_ids = encode_prompts(
            examples,
            loaded.tokenizer,
            template=settings.template,
            max_length=settings.max_length + 1,
        )
        long_prompts = sum(len(ids) > settings.max_length for ids in prompt_ids)
        prompt_ids = [ids[-settings.max_length :] for ids in prompt_ids]
        if long_prompts and encoded is None:  # with gradients, the warning above counted them
            truncated = long_prompts
            warnings.warn(
                f"{source}: {long_prompts} of {len(prompt_ids)} prompts left-truncated to "
                f"max_length={settings.max_length} for representations",
                stacklevel=2,
            )
        start = time.perf_counter()
        reprs = representations(
            loaded.model,
            prompt_ids,
            pad_token_id=pad_id,
            layer=settings.repsim_layer,
            pooling=settings.repsim_pooling,
            batch_size=settings.batch_size,
            progress=progress(f"representations · {source}", len(prompt_ids)),
            names=row_names,
        )
        timings[f"representations:{source}"] = time.perf_counter() - start
    features = FeatureSet(
        grads=grads, reprs=reprs, checkpoint_grads=ckpt_grads, checkpoint_lrs=ckpt_lrs, kfac=kfac
    )
    return features, truncated


def resolve_checkpoints(loaded: LoadedModel, settings: AttributeSettings) -> list[Checkpoint]:
    """The fine-tune checkpoints for TracIn: ``settings.checkpoints``, else beside the adapter."""
    if settings.checkpoints is not None:
        return load_checkpoints(settings.checkpoints)
    found = discover_checkpoints(loaded.identity.get("adapter"))
    if not found:
        raise ConfigError(
            "method 'tracin' needs the fine-tune's per-epoch checkpoints, but none were found "
            f"beside the adapter ({loaded.identity.get('adapter')}); pass --checkpoints DIR"
        )
    return found


def _create(name: str, settings: AttributeSettings) -> AttributionMethod:
    options: dict = {"damping": Damping(settings.damping_mode, settings.damping)}
    if settings.factors is not None and "kfac" in method_needs(get_method_class(name)):
        options["factors"] = str(Path(settings.factors) / f"{name}.safetensors")
    return create_method(name, **options)


def _topk_rows(method: str, scores: torch.Tensor, train: Sequence[Example], k: int) -> list[dict]:
    k = min(k, scores.size(1))
    values, indices = torch.topk(scores, k, dim=1)
    rows = []
    for q in range(scores.size(0)):
        top = [
            {"rank": r + 1, "index": int(i), "score": float(v), "label": train[int(i)].label}
            for r, (v, i) in enumerate(zip(values[q], indices[q], strict=True))
        ]
        rows.append({"method": method, "query": q, "top": top})
    return rows


def _example_rows(examples: Sequence[Example]) -> list[dict]:
    return [asdict(e) for e in examples]


def attribute(
    loaded: LoadedModel,
    train: Sequence[Example],
    queries: Sequence[Example],
    settings: AttributeSettings,
    out_dir: Path | str,
    *,
    sources: dict[str, str] | None = None,
    progress: StageProgress = _no_progress,
    command_options: dict | None = None,
) -> AttributionRun:
    """Score every query against every training example with each method in ``settings``.

    Args:
        loaded: the fine-tuned model (a PEFT LoRA model) and its tokenizer.
        train, queries: examples in file order; columns / rows of the score matrices follow it.
        sources: names of the data (e.g. ``{"train": "data.jsonl", "queries": ...}``), recorded
            in ``config.yaml`` and used in messages.
        command_options: the `attribute` command's resolved flags, recorded in ``config.yaml``
            so that ``attriblm attribute --config RUN/config.yaml`` repeats the run.

    Returns:
        The scores per method (``[n_query, n_train]`` float32, larger = more supportive) and
        the run information written to ``run.json``.
    """
    sources = {"train": "train", "queries": "queries", **(sources or {})}
    check_template(settings.template)  # before any work, whichever methods run
    check_loss_mask(settings.loss_mask)
    family = check_same_formatting([(sources["train"], train), (sources["queries"], queries)])
    if family is not None:
        warnings.warn(
            f"{sources['train']}: prompts already carry {family} chat-template markup and "
            f"--template {settings.template} wraps them again; give raw prompts",
            stacklevel=2,
        )
    names = expand_method_names(settings.methods)
    methods = {name: _create(name, settings) for name in names}
    needs = {kind for m in methods.values() for kind in method_needs(m)}
    need_grads = "gradients" in needs
    need_reprs = "representations" in needs
    need_kfac = "kfac" in needs and settings.factors is None
    checkpoints = resolve_checkpoints(loaded, settings) if "checkpoints" in needs else None
    timings: dict[str, float] = {}
    total_start = time.perf_counter()

    train_features, train_truncated = compute_features(
        loaded,
        train,
        settings,
        need_grads=need_grads,
        need_reprs=need_reprs,
        need_kfac=need_kfac,
        checkpoints=checkpoints,
        source=sources["train"],
        progress=progress,
        timings=timings,
    )
    query_features, query_truncated = compute_features(
        loaded,
        queries,
        settings,
        need_grads=need_grads,
        need_reprs=need_reprs,
        checkpoints=checkpoints,
        source=sources["queries"],
        progress=progress,
        timings=timings,
    )

    scores: dict[str, torch.Tensor] = {}
    method_info: dict[str, dict] = {}
    tick = progress("scoring", len(methods))
    for name, method in methods.items():
        start = time.perf_counter()
        output = method.score(train_features, query_features)
        timings[f"method:{name}"] = time.perf_counter() - start
        scores[name] = output.scores.float()
        method_info[name] = {"seconds": timings[f"method:{name}"], **output.info}
        tick(1)

    info = {
        "versions": _versions(),
        "model": loaded.identity,
        "n_train": len(train),
        "n_query": len(queries),
        "loss_mask": settings.loss_mask,
        "template": settings.template,
        "truncated": {"train": train_truncated, "queries": query_truncated},
        "blocks": (
            {b: list(g.shape[1:]) for b, g in train_features.grads.items()}
            if train_features.grads is not None
            else {}
        ),
        "methods": method_info,
        "checkpoints": (
            [{"path": str(c.path), "epoch": c.epoch, "lr": c.lr} for c in checkpoints]
            if checkpoints
            else None
        ),
        "timings_seconds": timings,
    }
    out_dir = Path(out_dir)
    with staged_directory(out_dir) as staging:
        (staging / "scores").mkdir()
        (staging / "data").mkdir()
        for name, matrix in scores.items():
            save_tensors(staging / "scores" / f"{name}.safetensors", {"scores": matrix})
        for name, method in methods.items():
            if getattr(method, "fitted", None) is not None:
                method.save_factors(staging / "factors" / f"{name}.safetensors")
        topk = [
            row for name in names for row in _topk_rows(name, scores[name], train, settings.topk)
        ]
        write_jsonl(staging / "topk.jsonl", topk)
        write_jsonl(staging / "data" / "train.jsonl", _example_rows(train))
        write_jsonl(staging / "data" / "queries.jsonl", _example_rows(queries))
        info["timings_seconds"]["total"] = time.perf_counter() - total_start
        write_json(staging / "run.json", info)
        config = {
            "model": loaded.identity.get("spec"),
            "adapter": loaded.identity.get("adapter"),
            "train": sources["train"],
            "queries": sources["queries"],
            "out": str(out_dir),
            **{k: v for k, v in asdict(settings).items() if k != "methods"},
            **(command_options or {}),
            "method": names,
            RESOLVED_KEY: {"model": dict(loaded.identity), "n_train": len(train)},
        }
        write_yaml(staging / "config.yaml", config)
    return AttributionRun(out_dir=out_dir, scores=scores, info=info)
