"""Fit each method on the train features, score the queries, and the shared diagnosis path.

:func:`fit_and_score` is the scoring stage of :func:`attriblm.pipeline.attribute.attribute`:
every method is fitted once on the train features (:meth:`AttributionMethod.fit`), or on the
train gradients in the store when the plan streams (:meth:`AttributionMethod.fit_store`), then
scores the queries. :func:`prepare_features` is the same path for the diagnoses: plan → store →
:class:`~attriblm.pipeline.features.FeatureBuilder` on both roles, honouring every
:class:`~attriblm.pipeline.settings.AttributeSettings` field that shapes features.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from attriblm.data.schema import Example
from attriblm.features.store import FeatureStore
from attriblm.methods.base import AttributionMethod, FeatureSet, Fitted
from attriblm.models.loading import LoadedModel
from attriblm.pipeline.features import FeatureBuilder, open_store
from attriblm.pipeline.plan import FeaturePlan, create_methods
from attriblm.pipeline.settings import AttributeSettings
from attriblm.progress import StageProgress, no_progress
from attriblm.train.checkpoints import Checkpoint

TRAIN_GRADS = "grads:train"  # the store kind streamed methods read


@dataclass
class Scored:
    """What :func:`fit_and_score` produced: per method its scores ``[n_query, n_train]``
    float32 (larger = more supportive), its ``run.json`` info and its fit (for saving factors)."""

    scores: dict[str, torch.Tensor] = field(default_factory=dict)
    info: dict[str, dict] = field(default_factory=dict)
    fits: dict[str, Fitted] = field(default_factory=dict)


def fit_method(
    method: AttributionMethod, train: FeatureSet, plan: FeaturePlan, store: FeatureStore | None
) -> Fitted:
    """``method`` fitted on ``train``, or on the stored train gradients when ``plan`` streams."""
    if plan.stream and store is not None:
        return method.fit_store(store, TRAIN_GRADS)
    return method.fit(train)


def fit_and_score(
    methods: dict[str, AttributionMethod],
    train: FeatureSet,
    queries: FeatureSet,
    plan: FeaturePlan,
    *,
    store: FeatureStore | None = None,
    timings: dict[str, float] | None = None,
    progress: StageProgress = no_progress,
    options: dict[str, dict] | None = None,
) -> Scored:
    """Fit and score every method; ``timings["method:<name>"]`` gets its seconds (fit + score).

    ``options`` (``AttributeSettings.options``) are recorded in each method's info beside the
    options the method reports itself.
    """
    timings = {} if timings is None else timings
    options = {} if options is None else options
    out = Scored()
    tick = progress("scoring", len(methods))
    for name, method in methods.items():
        start = time.perf_counter()
        fitted = fit_method(method, train, plan, store)
        output = fitted.score(queries)
        timings[f"method:{name}"] = time.perf_counter() - start
        out.scores[name] = output.scores.float()
        out.info[name] = {"seconds": timings[f"method:{name}"], **output.info}
        out.info[name]["options"] = {  # the user's, where the method reports fewer
            **options.get(name, {}),
            **output.info.get("options", {}),
        }
        out.fits[name] = fitted
        tick(1)
    return out


@dataclass
class Prepared:
    """Features of a train and a query set for some methods (:func:`prepare_features`)."""

    methods: dict[str, AttributionMethod]
    plan: FeaturePlan
    train: FeatureSet
    queries: FeatureSet
    truncated: dict[str, int]


def prepare_features(
    loaded: LoadedModel,
    train: Sequence[Example],
    queries: Sequence[Example],
    names: Sequence[str],
    settings: AttributeSettings,
    *,
    sources: dict[str, str] | None = None,
    checkpoints: Sequence[Checkpoint] | None = None,
    progress: StageProgress = no_progress,
    timings: dict[str, float] | None = None,
    store_dir: Path | str | None = None,
) -> Prepared:
    """Methods ``names`` built from ``settings`` (damping, factors, options), their plan and
    both roles' features, in memory (train gradients loaded: no streaming).

    The store is ``store_dir`` (default ``settings.store``; ``None``: in memory), so a
    diagnosis given ``--store`` resumes its features; ``store_dtype`` and the projection apply.
    """
    sources = {"train": "train", "queries": "queries", **(sources or {})}
    methods = create_methods(names, settings)
    plan = FeaturePlan.from_methods(methods, settings)
    root = store_dir if store_dir is not None else settings.store
    store = open_store(None if root is None else Path(root).expanduser(), loaded, settings)
    builder = FeatureBuilder(
        loaded, settings, store, plan, checkpoints=checkpoints, progress=progress,
        timings={} if timings is None else timings,
    )  # fmt: skip
    train_f, n_train = builder.build("train", train, sources["train"])
    query_f, n_query = builder.build("queries", queries, sources["queries"])
    return Prepared(methods, plan, train_f, query_f, {"train": n_train, "queries": n_query})
