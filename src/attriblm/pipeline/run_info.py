"""What an attribution run records: ``run.json``, ``config.yaml`` and the ``topk.jsonl`` rows."""

from __future__ import annotations

import platform
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from attriblm import __version__
from attriblm.config import RESOLVED_KEY
from attriblm.data.schema import Example
from attriblm.dist import Dist
from attriblm.features.rept import n_layers, resolve_layer
from attriblm.features.store import FeatureStore
from attriblm.methods.base import FeatureSet
from attriblm.metrics.ranking import TIE_RULE, TIE_SEED, rank_train
from attriblm.models.loading import LoadedModel
from attriblm.pipeline.plan import Feature, FeaturePlan
from attriblm.pipeline.scoring import TRAIN_GRADS
from attriblm.pipeline.settings import AttributeSettings
from attriblm.train.checkpoints import Checkpoint
from attriblm.train.optimizer_state import AdamMoments


def versions() -> dict[str, str]:
    """attriblm's and its main dependencies' versions (``run.json["versions"]``)."""
    import peft
    import transformers

    return {
        "attriblm": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "python": platform.python_version(),
    }


def feature_info(
    loaded: LoadedModel,
    settings: AttributeSettings,
    plan: FeaturePlan,
    moments: AdamMoments | None,
) -> dict:
    """What the RepT and LESS features were made with (``run.json["features"]``); resolving
    RepT's layer checks it (ConfigError) before any work."""
    info: dict = {}
    if plan.needs(Feature.REPT):
        layer = resolve_layer(settings.rept_layer, n_layers(loaded.model))
        info["rept"] = {"layer": layer, "position": "last prompt token", "loss_mask": "response"}
    if moments is not None:
        info["less"] = {
            "projection": settings.less_projection().to_json(),
            "betas": [moments.beta1, moments.beta2],
            "eps": moments.eps,
            "step": moments.step,
            "moments_sha256": moments.digest,
        }
    return info


def _blocks(train: FeatureSet, store: FeatureStore, plan: FeaturePlan) -> dict:
    if train.grads is not None:
        return {b: list(g.shape[1:]) for b, g in train.grads.items()}
    if plan.stream:
        return {b: [w] for b, w in store.blocks(TRAIN_GRADS).items()}
    return {}


def run_info(
    *,
    loaded: LoadedModel,
    settings: AttributeSettings,
    n: dict[str, int],
    truncated: dict[str, int],
    train: FeatureSet,
    plan: FeaturePlan,
    features: dict,
    methods: dict[str, dict],
    checkpoints: Sequence[Checkpoint] | None,
    timings: dict[str, float],
    store: FeatureStore,
    store_rows: dict,
    kept: bool,
    dist: Dist,
) -> dict:
    """``run.json``'s content (docs/DESIGN.md §2); ``n`` and ``truncated`` per role."""
    return {
        "versions": versions(),
        "model": loaded.identity,
        "n_train": n["train"],
        "n_query": n["queries"],
        "loss_mask": settings.loss_mask,
        "template": settings.template,
        "ranking": {"ties": TIE_RULE, "tie_seed": TIE_SEED},
        "truncated": truncated,
        "blocks": _blocks(train, store, plan),
        "streamed": plan.stream,
        "features": features,
        "methods": methods,
        "checkpoints": ([c.to_json() for c in checkpoints] if checkpoints else None),
        "timings_seconds": timings,
        "store": {**store.summary(), "rows": store_rows, "kept": kept},
        "distributed": {"world_size": dist.world_size, "backend_device": str(dist.device)},
    }


def run_config(
    loaded: LoadedModel,
    settings: AttributeSettings,
    names: Sequence[str],
    sources: dict[str, str],
    out_dir: Path,
    n_train: int,
    command_options: dict | None,
) -> dict:
    """``config.yaml``: the top-level options ``attriblm attribute --config`` repeats the run
    with, and under ``resolved:`` the whole settings, the model identity and ``n_train``."""
    flat = {k: v for k, v in settings.to_dict().items() if k != "methods"}
    resolved = {"settings": settings.to_dict(), "model": dict(loaded.identity), "n_train": n_train}
    return {
        "model": loaded.identity.get("spec"),
        "adapter": loaded.identity.get("adapter"),
        "train": sources["train"],
        "queries": sources["queries"],
        "out": str(out_dir),
        **flat,
        **(command_options or {}),
        "method": list(names),
        RESOLVED_KEY: resolved,
    }


def topk_rows(
    method: str, scores: torch.Tensor, train: Sequence[Example], k: int, tie_seed: int = TIE_SEED
) -> list[dict]:
    """Per query the top-``k`` training rows of ``scores [n_query, n_train]`` in the metrics'
    ranking (:func:`attriblm.metrics.ranking.rank_train`, ties by the seeded permutation)."""
    k = min(k, scores.size(1))
    order = rank_train(scores, tie_seed)[:, :k]
    values = scores.detach().cpu()
    rows = []
    for q in range(scores.size(0)):
        top = [
            {
                "rank": r + 1,
                "index": int(i),
                "score": float(values[q, i]),
                "label": train[int(i)].label,
            }
            for r, i in enumerate(order[q])
        ]
        rows.append({"method": method, "query": q, "top": top})
    return rows


def example_rows(examples: Sequence[Example]) -> list[dict]:
    """The examples as ``data/{train,queries}.jsonl`` rows."""
    return [asdict(e) for e in examples]
