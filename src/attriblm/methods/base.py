"""The attribution-method interface: features in, a score matrix out.

Conventions (docs/DESIGN.md §2), shared by every method:

* **Score matrix** ``[n_query, n_train]`` float32; rows follow the query order, columns the train
  order of the :class:`FeatureSet` s.
* **Sign**: ``s(q, i) = v_qᵀ Ĥ⁻¹ g_i``; larger = more supportive (training on ``i`` lowers the
  query's loss). The paper's influence is ``I = −s``; ranking by ``s`` descending is its ranking.
* **Blocks**: one gradient block per LoRA matrix; the curvature is block-diagonal, so each block
  is preconditioned on its own and scores sum over blocks. ``H_b = G_bᵀ G_b / n`` (empirical
  Fisher) and ``λ_b`` comes from :class:`~attriblm.methods.damping.Damping`.
* All linear algebra runs in float64; only the returned scores are float32.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from attriblm.errors import ConfigError, DataError
from attriblm.methods.damping import Damping

if TYPE_CHECKING:
    from attriblm.features.store import FeatureStore


@dataclass
class FeatureSet:
    """Per-example features of one example set (train or queries), rows in file order.

    Attributes:
        grads: block name → ``[n, d_b]`` float32 per-example loss gradients, one block per LoRA
            matrix; train and queries carry the same block names.
        reprs: ``[n, h]`` representation vectors (for RepSim).
        checkpoint_grads: one ``grads``-shaped dict per saved checkpoint (for TracIn), in
            checkpoint order.
        checkpoint_lrs: TracIn's weight ``η_c`` per checkpoint (same order): the sum of the
            learning rates of the optimiser steps since the previous checkpoint.
        kfac: block name → :class:`~attriblm.features.kfac.KFACFactors` (train side only, for
            K-FAC / EK-FAC).
        rept: ``[n, 2h]`` RepT features, a hidden state and its loss gradient
            (:mod:`attriblm.features.rept`).
        adam_grads: block name → ``[n, d_b]`` LESS features (:mod:`attriblm.features.adam`):
            the Adam update direction (train) or the plain gradient (queries), projected.
    """

    grads: dict[str, Tensor] | None = None
    reprs: Tensor | None = None
    checkpoint_grads: list[dict[str, Tensor]] | None = None
    checkpoint_lrs: list[float] | None = None
    kfac: dict[str, Any] | None = None
    rept: Tensor | None = None
    adam_grads: dict[str, Tensor] | None = None

    @property
    def n(self) -> int:
        """Number of examples (rows); 0 when the set holds no features."""
        if self.grads:
            return int(next(iter(self.grads.values())).shape[0])
        if self.reprs is not None:
            return int(self.reprs.shape[0])
        if self.checkpoint_grads and self.checkpoint_grads[0]:
            return int(next(iter(self.checkpoint_grads[0].values())).shape[0])
        if self.rept is not None:
            return int(self.rept.shape[0])
        if self.adam_grads:
            return int(next(iter(self.adam_grads.values())).shape[0])
        return 0


@dataclass
class MethodOutput:
    """What a method returns.

    Attributes:
        scores: ``[n_query, n_train]`` float32, larger = more supportive (docs/DESIGN.md §2).
        info: JSON-serialisable facts needed to judge the numbers (λ per block, iterations,
            residuals, convergence flags, options).
    """

    scores: Tensor
    info: dict


class Fitted:
    """A method fitted on one training set; :meth:`score` scores query sets against it.

    Holds everything a scoring call depends on besides the queries (the train features,
    fitted factors, per-call facts), so the method object itself keeps only its options.
    """

    def __init__(self, method: AttributionMethod, train: FeatureSet | None) -> None:
        self.method = method
        self.train = train

    def score(self, queries: FeatureSet) -> MethodOutput:
        """Scores ``[queries.n, n_train]`` float32 (larger = more supportive) and info."""
        return self.method.score(self.train, queries)

    def save_factors(self, path: Path | str) -> Path | None:
        """Write what was fitted (e.g. K-FAC eigenbases) to ``path``; ``None``: nothing to save."""
        return None


SIGN_NOTE = "larger = more supportive (gradient methods: s = v·Ĥ⁻¹g, paper influence -s)"
FEATURE_KINDS = (
    "gradients",
    "representations",
    "kfac",
    "checkpoints",
    "representation-gradients",
    "adam-gradients",
)


def method_needs(method: AttributionMethod | type[AttributionMethod]) -> tuple[str, ...]:
    """The feature kinds a method (class or instance) declares in ``needs``, as a tuple."""
    needs = method.needs
    return (needs,) if isinstance(needs, str) else tuple(needs)


class AttributionMethod(ABC):
    """One attribution method. Options are constructor keyword arguments.

    Class attributes:
        name: the registry / ``--method`` name.
        needs: one feature kind or a tuple of them, from :data:`FEATURE_KINDS`:
            ``"gradients"`` (per-example gradients, train and queries), ``"representations"``,
            ``"kfac"`` (train-side K-FAC factors), ``"checkpoints"`` (per-checkpoint gradients
            and learning rates, train and queries), ``"representation-gradients"`` (RepT
            features), ``"adam-gradients"`` (LESS features; the fine-tune's AdamW moments).
        summary: one line for ``--help`` and docs.
    """

    name: ClassVar[str]
    needs: ClassVar[str | tuple[str, ...]]
    summary: ClassVar[str]
    streams: ClassVar[bool] = False

    @abstractmethod
    def score(self, train: FeatureSet, queries: FeatureSet) -> MethodOutput:
        """Scores ``[queries.n, train.n]`` float32 (larger = more supportive) and info."""

    def fit(self, train: FeatureSet) -> Fitted:
        """This method fitted on ``train``: what depends on the training set alone, computed
        once, for any number of query sets (:meth:`Fitted.score`).

        Default: nothing to fit; :meth:`Fitted.score` calls :meth:`score` with ``train``. A
        method with train-only work (curvature, factors) overrides this.
        """
        return Fitted(self, train)

    def fit_store(self, store: FeatureStore, kind: str) -> Fitted:
        """This method fitted on the train rows of ``kind`` in ``store``, read shard by shard
        (never whole). Only for methods with ``streams = True``."""
        raise NotImplementedError(f"method '{self.name}' cannot be scored from a feature store")

    def options(self) -> dict[str, Any]:
        """The constructor options in force, JSON-serialisable (recorded in ``info``)."""
        return {}

    def _base_info(self, train: FeatureSet, queries: FeatureSet) -> dict[str, Any]:
        return {
            "method": self.name,
            "needs": list(method_needs(self)),
            "options": self.options(),
            "n_train": train.n,
            "n_query": queries.n,
            "sign": SIGN_NOTE,
        }


def _check_finite(t: Tensor, what: str) -> None:
    if not bool(torch.isfinite(t).all()):
        raise DataError(f"{what} contain NaN or infinite values")


def check_gradients(method: str, train: FeatureSet, queries: FeatureSet) -> list[str]:
    """Validate a train/query gradient pair; returns the block names (train order).

    Raises ConfigError when gradients are missing and DataError when blocks, shapes or values
    do not fit (the message names the block).
    """
    for which, fs in (("train", train), ("query", queries)):
        if fs.grads is None:
            raise ConfigError(
                f"method '{method}' needs per-example gradients, but the {which} features have none"
            )
        if not fs.grads:
            raise DataError(f"the {which} features have no gradient blocks")
    blocks = list(train.grads)
    missing_q = [b for b in blocks if b not in queries.grads]
    missing_t = [b for b in queries.grads if b not in train.grads]
    if missing_q or missing_t:
        raise DataError(
            "train and query gradients have different blocks: "
            f"missing from queries {missing_q[:5]}, missing from train {missing_t[:5]}"
        )
    n = train.grads[blocks[0]].shape[0] if train.grads[blocks[0]].ndim == 2 else -1
    m = queries.grads[blocks[0]].shape[0] if queries.grads[blocks[0]].ndim == 2 else -1
    for b in blocks:
        g, v = train.grads[b], queries.grads[b]
        if g.ndim != 2 or v.ndim != 2:
            raise DataError(
                f"gradient block '{b}' must be 2-D [n, d]; got train {list(g.shape)}, "
                f"queries {list(v.shape)}"
            )
        if g.shape[1] != v.shape[1]:
            raise DataError(
                f"gradient block '{b}' has width {g.shape[1]} for train but {v.shape[1]} for "
                "queries"
            )
        if g.shape[0] != n or v.shape[0] != m:
            raise DataError(
                f"gradient block '{b}' has {g.shape[0]} train / {v.shape[0]} query rows; "
                f"block '{blocks[0]}' has {n} / {m}"
            )
        _check_finite(g, f"train gradients of block '{b}'")
        _check_finite(v, f"query gradients of block '{b}'")
    if n == 0 or m == 0:
        raise DataError(f"nothing to attribute: {n} train and {m} query examples")
    return blocks


def check_representations(
    method: str,
    train: FeatureSet,
    queries: FeatureSet,
    field: str = "reprs",
    what: str = "representations",
) -> None:
    """Validate a train/query pair of row vectors (``[n, h]`` each, same ``h``, finite).

    ``field`` is the :class:`FeatureSet` attribute (``reprs``, ``rept``), ``what`` its name in
    messages.
    """
    for which, fs in (("train", train), ("query", queries)):
        rows = getattr(fs, field)
        if rows is None:
            raise ConfigError(f"method '{method}' needs {what}, but the {which} features have none")
        if rows.ndim != 2:
            raise DataError(f"{which} {what} must be 2-D [n, h], got {list(rows.shape)}")
        _check_finite(rows, f"{which} {what}")
    t, q = getattr(train, field), getattr(queries, field)
    if t.shape[1] != q.shape[1]:
        raise DataError(f"train {what} have width {t.shape[1]} but queries {q.shape[1]}")
    if t.shape[0] == 0 or q.shape[0] == 0:
        raise DataError(f"nothing to attribute: {t.shape[0]} train and {q.shape[0]} query examples")


def cosine_from_parts(dots: Tensor, q_sq: Tensor, t_sq: Tensor) -> Tensor:
    """Cosine ``[m, n]`` from dot products ``[m, n]`` and squared norms ``[m]``, ``[n]``.

    A pair where either vector has zero norm gets cosine 0 (no direction, no evidence).
    """
    denom = q_sq.sqrt()[:, None] * t_sq.sqrt()[None, :]
    return torch.where(denom > 0, dots / denom.clamp_min(torch.finfo(dots.dtype).tiny), 0.0)


class PreconditionedGradientMethod(AttributionMethod):
    """Template for ``s = Σ_b (Ĥ_b⁻¹ v_b) · g_b``: subclasses supply ``Ĥ_b⁻¹ v``.

    :meth:`fit` gives a :class:`PreconditionedFit`, which validates the features, computes
    ``λ_b`` per block (when ``damped``), calls :meth:`precondition` (or
    :meth:`precondition_blocks`) in float64, and sums ``U_b G_bᵀ`` over blocks. Per-block facts
    recorded with :meth:`record` during that call end up in its ``info["blocks"]``.
    """

    needs: ClassVar[str] = "gradients"
    damped: ClassVar[bool] = True

    def __init__(self, damping: Damping | None = None) -> None:
        self.damping = damping if damping is not None else Damping()
        self._active: PreconditionedFit | None = None  # the fit being scored, during the call

    @abstractmethod
    def precondition(self, block: str, queries: Tensor, train: Tensor, damping: float) -> Tensor:
        """``Ĥ_b⁻¹ v`` for each row of ``queries [m, d]`` given ``train [n, d]`` (float64).

        ``damping`` is ``λ_b`` (0.0 for methods that do not damp). Returns ``[m, d]`` float64.
        """

    def precondition_blocks(
        self, train: dict[str, Tensor], queries: dict[str, Tensor], dampings: dict[str, float]
    ) -> dict[str, Tensor]:
        """All blocks at once (inputs in their stored dtype); default: one block at a time.

        Override to batch blocks together; return float64 ``[m, d_b]`` per block.
        """
        return {
            b: self.precondition(b, queries[b].double(), train[b].double(), dampings[b])
            for b in train
        }

    def block_dampings(self, train: dict[str, Tensor]) -> dict[str, float]:
        """``λ_b`` per block; default :meth:`Damping.lambda_for` on the block's train gradients.

        Blocks whose train gradients are all zero get the λ floor; they are recorded
        (``zero_gradients``) and named in one warning.
        """
        dead = [b for b, g in train.items() if not bool(g.any())]
        for b in dead:
            self.record(b, zero_gradients=True)
        if dead:
            warnings.warn(
                f"{len(dead)} of {len(train)} gradient blocks have all-zero training gradients "
                f"(first: {dead[0]}); they add 0 to every score (λ floored to the damping value)",
                stacklevel=2,
            )
        return {b: self.damping.lambda_for(g, block=b) for b, g in train.items()}

    @property
    def active_fit(self) -> PreconditionedFit:
        """The :class:`PreconditionedFit` being scored (only inside its scoring call)."""
        if self._active is None:
            raise RuntimeError(f"{self.name}: no scoring call in progress (use fit().score())")
        return self._active

    def record(self, block: str, **facts: Any) -> None:
        """Attach JSON-serialisable facts about ``block`` to ``info["blocks"][block]`` of the
        scoring call in progress."""
        self.active_fit.facts.setdefault(block, {}).update(facts)

    def summarize(self, blocks: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Method-level summary of the per-block facts, merged into ``info``."""
        return {}

    def options(self) -> dict[str, Any]:
        return {"damping": self.damping.to_dict()} if self.damped else {}

    def fit(self, train: FeatureSet) -> PreconditionedFit:
        return PreconditionedFit(self, train)

    def preconditioned(
        self, train: FeatureSet, queries: FeatureSet
    ) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Per-block preconditioned query vectors ``{block: [m, d_b]}`` (float64) and info
        (``fit(train).preconditioned(queries)``)."""
        return self.fit(train).preconditioned(queries)

    def score(self, train: FeatureSet, queries: FeatureSet) -> MethodOutput:
        """``s = Σ_b U_b G_bᵀ`` ``[m, n]`` float32 (``fit(train).score(queries)``)."""
        return self.fit(train).score(queries)


class PreconditionedFit(Fitted):
    """A :class:`PreconditionedGradientMethod` fitted on ``train``.

    ``facts`` holds the per-block facts of the scoring call in progress (or the last one).
    """

    method: PreconditionedGradientMethod
    train: FeatureSet

    def __init__(self, method: PreconditionedGradientMethod, train: FeatureSet) -> None:
        super().__init__(method, train)
        self.facts: dict[str, dict[str, Any]] = {}

    def preconditioned(self, queries: FeatureSet) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Per-block preconditioned query vectors ``{block: [m, d_b]}`` (float64) and info."""
        method, train = self.method, self.train
        blocks = check_gradients(method.name, train, queries)
        self.facts = {b: {"d": int(train.grads[b].shape[1])} for b in blocks}
        train_g = {b: train.grads[b] for b in blocks}
        query_g = {b: queries.grads[b] for b in blocks}
        previous, method._active = method._active, self
        try:
            if method.damped:
                dampings = method.block_dampings(train_g)
            else:
                dampings = dict.fromkeys(blocks, 0.0)
            u = method.precondition_blocks(train_g, query_g, dampings)
            info = method._base_info(train, queries)
            if method.damped:
                info["damping"] = method.damping.to_dict()
                info["lambda"] = dampings
            else:
                info["damping"] = f"none: {method.name} does not damp (Ĥ = I)"
                info["lambda"] = None
            info["blocks"] = self.facts
            info.update(method.summarize(self.facts))
        finally:
            method._active = previous
        return {b: u[b] for b in blocks}, info

    def score(self, queries: FeatureSet) -> MethodOutput:
        """``s = Σ_b U_b G_bᵀ`` ``[m, n]`` float32, ``U_b`` from :meth:`preconditioned`."""
        u, info = self.preconditioned(queries)
        device = next(iter(u.values())).device
        scores = torch.zeros(queries.n, self.train.n, dtype=torch.float64, device=device)
        for b, ub in u.items():
            scores.addmm_(ub, self.train.grads[b].to(device=ub.device, dtype=torch.float64).T)
        return MethodOutput(scores=scores.float(), info=info)
