"""Compute a :class:`~attriblm.pipeline.plan.FeaturePlan` for one role into a feature store.

:class:`FeatureBuilder` computes the planned features of one example set (``train`` or
``queries``) batch by batch into a :class:`~attriblm.features.store.FeatureStore` (kinds
``grads:<role>``, ``kfac:<role>`` with per-batch K-FAC sums, ``ckpt-<c>:<role>``,
``reprs:<role>``, ``rept:<role>``, ``adam:<role>``); batches the store already holds are
skipped (resume), with the same batch boundaries as an uninterrupted single-process run. Under
torchrun each rank computes its own batches into its own store and every rank gets the whole
feature set (:mod:`attriblm.features.gather`).
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from attriblm.data.schema import Example
from attriblm.data.tokenize import (
    encode_examples,
    encode_prompts,
    encode_warning_truncated,
    loss_mask_identity,
)
from attriblm.dist import SINGLE, Dist
from attriblm.errors import ConfigError
from attriblm.features.adam import less_features
from attriblm.features.checkpoints import ADAPTER_FILE, adapter_weights, matches_current_weights
from attriblm.features.gather import gather_rows, gather_stats
from attriblm.features.gradients import per_example_gradients
from attriblm.features.kfac import KFACCollector, factors_from_sums
from attriblm.features.representations import representations
from attriblm.features.rept import n_layers, rept_features, resolve_layer
from attriblm.features.store import FeatureStore, batch_ranges, settings_key, tensors_digest
from attriblm.methods.base import FeatureSet
from attriblm.models.loading import LoadedModel
from attriblm.pipeline.plan import Feature, FeaturePlan
from attriblm.pipeline.settings import AttributeSettings
from attriblm.progress import StageProgress, no_progress
from attriblm.train.checkpoints import Checkpoint, discover_checkpoints, load_checkpoints
from attriblm.train.optimizer_state import AdamMoments, moments_of

Computed = dict[str, tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]]


def encode_with_warning(examples, loaded, settings, source):
    """Encode ``examples`` with ``settings``; warn once with the count truncated to max_length
    (:func:`attriblm.data.tokenize.encode_warning_truncated`)."""
    return encode_warning_truncated(
        examples,
        loaded.tokenizer,
        template=settings.template,
        loss_mask=settings.loss_mask,
        max_length=settings.max_length,
        source=source,
        stacklevel=4,
    )


def store_settings(loaded: LoadedModel, settings: AttributeSettings) -> dict:
    """What every stored feature depends on: the store's settings key (JSON-serialisable).

    The model identity, a digest of its LoRA weights (a retrained adapter at the same path is
    another model), and the options that shape batches (template, max length, batch size).
    Data, loss mask, RepSim options and checkpoints enter each kind's own key.
    """
    lora = ((n, p) for n, p in loaded.model.named_parameters() if "lora_" in n)
    return {
        "model": json.loads(json.dumps(loaded.identity, default=str)),
        "lora_weights": tensors_digest(lora),
        "template": settings.template,
        "max_length": settings.max_length,
        "batch_size": settings.batch_size,
    }


def open_store(root: Path | None, loaded: LoadedModel, settings: AttributeSettings) -> FeatureStore:
    """The feature store at ``root`` (``None``: in memory) for ``loaded`` under ``settings``;
    warns when a store on disk was made with other settings and starts afresh."""
    store = FeatureStore(
        root,
        store_settings(loaded, settings),
        dtype=settings.store_dtype,
        projection=settings.projection(),
    )
    if store.reset_reason is not None:
        warnings.warn(
            f"{root}: feature store made with {store.reset_reason}; starting it afresh",
            stacklevel=2,
        )
    return store


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


def plan_inputs(
    loaded: LoadedModel,
    settings: AttributeSettings,
    plan: FeaturePlan,
    checkpoints: Sequence[Checkpoint] | None = None,
    moments: AdamMoments | None = None,
) -> tuple[Sequence[Checkpoint] | None, AdamMoments | None]:
    """The checkpoints (TracIn) and AdamW moments (LESS) ``plan`` needs, unless given; found
    beside the adapter (ConfigError naming what is missing). ``None`` where not needed."""
    if not plan.needs(Feature.CHECKPOINT_GRADIENTS):
        checkpoints = None
    elif not checkpoints:
        checkpoints = resolve_checkpoints(loaded, settings)
    if not plan.needs(Feature.ADAM):
        moments = None
    elif moments is None:
        moments = moments_of(loaded.identity)
    return checkpoints, moments


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"


def fill_store(
    store: FeatureStore,
    kinds: dict[str, str],
    n_rows: int,
    batch_size: int,
    compute: Callable[[int, int], Computed],
    progress: StageProgress,
    description: str,
    counts: dict[str, dict[str, int]],
    project: Sequence[str] = (),
    dist: Dist = SINGLE,
) -> None:
    """Compute this rank's batches of ``kinds`` (kind → data key) missing from ``store``.

    ``compute(start, stop)`` returns kind → ``(rows, stats)`` for rows ``[start, stop)``; it is
    called only for batches some kind lacks, with the same batch boundaries as an
    uninterrupted single-process run (one shard per batch). Under torchrun a rank owns batches
    ``rank, rank + W, …`` (:meth:`Dist.mine`). The progress bar counts the rank's rows: reused
    ones first, then each computed batch after its shards are written.
    """
    for kind, key in kinds.items():
        store.begin(kind, n_rows=n_rows, key=key, project=kind in project)
    owned = dist.mine(batch_ranges(n_rows, batch_size))
    pending = [r for r in store.pending(list(kinds), batch_size) if r in owned]
    computed = sum(stop - start for start, stop in pending)
    reused = sum(stop - start for start, stop in owned) - computed
    for kind in kinds:
        counts[kind] = {"reused": reused, "computed": computed}
    if dist.active:
        description = f"{description} · rank {dist.rank} of {dist.world_size}"
    advance = progress(description, reused + computed)
    if reused:
        advance(reused)
    for start, stop in pending:
        out = compute(start, stop)
        for kind in kinds:
            rows, stats = out[kind]
            store.write(kind, start, stop, rows, stats)
        advance(stop - start)
    store.compact()  # the manifest lists every shard again; the journal is gone


@dataclass
class _Role:
    """One example set being built: its rows, names, data digest, encoding and truncation."""

    role: str
    examples: Sequence[Example]
    source: str
    features: frozenset[Feature]
    row_names: list[str] = field(init=False)
    data: str = field(init=False)
    encoded: list | None = None
    truncated: int = 0

    def __post_init__(self) -> None:
        self.row_names = [f"{self.source} row {i + 1}" for i in range(len(self.examples))]
        self.data = settings_key([asdict(e) for e in self.examples])

    def kind(self, name: str) -> str:
        return f"{name}:{self.role}"


@dataclass
class FeatureBuilder:
    """Computes a plan's features of one role into ``store`` (:meth:`build`).

    ``checkpoints`` (TracIn) and ``moments`` (LESS, train side) are resolved from ``loaded``
    and ``settings`` when the plan needs them and they are not given. ``counts`` receives kind →
    ``{"reused": rows, "computed": rows}``, ``timings`` seconds per stage and source.
    """

    loaded: LoadedModel
    settings: AttributeSettings
    store: FeatureStore
    plan: FeaturePlan
    checkpoints: Sequence[Checkpoint] | None = None
    moments: AdamMoments | None = None
    progress: StageProgress = no_progress
    dist: Dist = SINGLE
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.checkpoints, self.moments = plan_inputs(
            self.loaded, self.settings, self.plan, self.checkpoints, self.moments
        )

    def build(self, role: str, examples: Sequence[Example], source: str) -> tuple[FeatureSet, int]:
        """The planned features of ``examples`` as ``role`` and the number truncated.

        The train gradients stay in the store when the plan streams (``grads`` is ``None``).
        """
        r = _Role(role, examples, source, self.plan.features[role])
        want = r.features
        grads = adam = kfac = ckpt_grads = ckpt_lrs = reprs = rept = None
        if want & {
            Feature.GRADIENTS,
            Feature.KFAC_STATS,
            Feature.ADAM,
            Feature.CHECKPOINT_GRADIENTS,
        }:
            r.encoded, r.truncated = encode_with_warning(
                examples, self.loaded, self.settings, source
            )
        if want & {Feature.GRADIENTS, Feature.KFAC_STATS, Feature.ADAM}:
            grads, adam, kfac = self._gradient_pass(r)
        if Feature.CHECKPOINT_GRADIENTS in want and self.checkpoints:
            ckpt_grads, ckpt_lrs = self._checkpoint_gradients(r, grads)
        if Feature.REPRESENTATIONS in want:
            reprs = self._representations(r)
        if Feature.REPT in want:
            rept = self._rept(r)
        features = FeatureSet(
            grads=grads,
            reprs=reprs,
            checkpoint_grads=ckpt_grads,
            checkpoint_lrs=ckpt_lrs,
            kfac=kfac,
            rept=rept,
            adam_grads=adam,
        )
        return features, r.truncated

    def _gradients(self, r: _Role, start: int, stop: int, on_batch=None) -> dict[str, torch.Tensor]:
        return per_example_gradients(
            self.loaded.model,
            r.encoded[start:stop],
            pad_token_id=self.loaded.tokenizer.pad_token_id,
            batch_size=self.settings.batch_size,
            names=r.row_names[start:stop],
            on_batch=on_batch,
        )

    def _fill(self, r: _Role, kinds: dict[str, str], n_rows: int, compute, what: str, project=()):
        fill_store(
            self.store, kinds, n_rows, self.settings.batch_size, compute, self.progress,
            f"{what} · {r.source}", self.counts, project, self.dist,
        )  # fmt: skip

    def _gradient_pass(self, r: _Role):
        """Gradients, K-FAC sums and LESS features in one forward/backward pass per batch."""
        settings, want = self.settings, r.features
        start = time.perf_counter()
        need_kfac, need_adam = Feature.KFAC_STATS in want, Feature.ADAM in want
        grads_kind, kfac_kind, adam_kind = r.kind("grads"), r.kind("kfac"), r.kind("adam")
        grad_key = settings_key(
            {"data": r.data, "loss_mask": loss_mask_identity(settings.loss_mask)}
        )
        kinds = {grads_kind: grad_key} if want & {Feature.GRADIENTS, Feature.KFAC_STATS} else {}
        if need_kfac:
            kinds[kfac_kind] = grad_key
        moments = self.moments if r.role == "train" else None  # queries: the plain gradient
        less_projection = settings.less_projection()
        if need_adam:
            kinds[adam_kind] = settings_key(
                {
                    "data": r.data,
                    "loss_mask": loss_mask_identity(settings.loss_mask),
                    "moments": None if moments is None else moments.digest,
                    "projection": less_projection.to_json(),
                }
            )
        collector = KFACCollector(self.loaded.model) if need_kfac else None

        def grads_and_sums(lo: int, hi: int) -> Computed:
            if collector is not None:
                collector.take_sums()  # drop anything a failed batch left behind
            block_grads = self._gradients(
                r, lo, hi, None if collector is None else collector.set_batch
            )
            out: Computed = {grads_kind: (block_grads, None)} if grads_kind in kinds else {}
            if collector is not None:
                out[kfac_kind] = ({}, collector.take_sums())
            if need_adam:
                out[adam_kind] = (less_features(block_grads, moments, less_projection), None)
            return out

        try:
            self._fill(r, kinds, len(r.encoded), grads_and_sums, "gradients", [grads_kind])
        finally:
            if collector is not None:
                collector.close()
        n, dist = len(r.encoded), self.dist
        load = not (self.plan.stream and r.role == "train")
        grads = (
            gather_rows(self.store, grads_kind, n, dist) if load and grads_kind in kinds else None
        )
        adam = gather_rows(self.store, adam_kind, n, dist) if need_adam else None
        kfac = factors_from_sums(gather_stats(self.store, kfac_kind, dist)) if need_kfac else None
        self.timings[f"gradients:{r.source}"] = time.perf_counter() - start
        return grads, adam, kfac

    def _checkpoint_gradients(self, r: _Role, grads):
        """One gradient set per checkpoint (its weights loaded in turn) and their ``η_c``."""
        start = time.perf_counter()
        model, checkpoints = self.loaded.model, self.checkpoints
        ckpt_grads = []
        for c, ckpt in enumerate(checkpoints):
            if grads is not None and matches_current_weights(model, ckpt.path):
                ckpt_grads.append(grads)  # the same weights: identical values, no second pass
                continue
            kind = r.kind(f"ckpt-{c}")
            key = settings_key(
                {
                    "data": r.data,
                    "loss_mask": self.settings.loss_mask,
                    "checkpoint": str(ckpt.path),
                    "weights": _file_digest(Path(ckpt.path) / ADAPTER_FILE),
                }
            )
            with adapter_weights(model, ckpt.path):
                self._fill(
                    r, {kind: key}, len(r.encoded),
                    lambda lo, hi, kind=kind: {kind: (self._gradients(r, lo, hi), None)},
                    f"checkpoint {c + 1}/{len(checkpoints)} gradients", [kind],
                )  # fmt: skip
            ckpt_grads.append(gather_rows(self.store, kind, len(r.encoded), self.dist))
        self.timings[f"checkpoint_gradients:{r.source}"] = time.perf_counter() - start
        return ckpt_grads, [c.eta for c in checkpoints]

    def _representations(self, r: _Role) -> torch.Tensor:
        """RepSim's pooled hidden states ``[n, h]`` of the prompts (left-truncated, warned)."""
        settings, tokenizer = self.settings, self.loaded.tokenizer
        # one token over the limit shows which prompts get left-truncated (never silently)
        prompt_ids = encode_prompts(
            r.examples, tokenizer, template=settings.template, max_length=settings.max_length + 1
        )
        long_prompts = sum(len(ids) > settings.max_length for ids in prompt_ids)
        prompt_ids = [ids[-settings.max_length :] for ids in prompt_ids]
        if long_prompts and r.encoded is None:  # with gradients, the warning above counted them
            r.truncated = long_prompts
            warnings.warn(
                f"{r.source}: {long_prompts} of {len(prompt_ids)} prompts left-truncated to "
                f"max_length={settings.max_length} for representations",
                stacklevel=3,
            )
        start = time.perf_counter()
        kind = r.kind("reprs")
        key = settings_key(
            {"data": r.data, "layer": settings.repsim_layer, "pooling": settings.repsim_pooling}
        )

        def reprs_batch(lo: int, hi: int) -> Computed:
            rows = representations(
                self.loaded.model,
                prompt_ids[lo:hi],
                pad_token_id=tokenizer.pad_token_id,
                layer=settings.repsim_layer,
                pooling=settings.repsim_pooling,
                batch_size=settings.batch_size,
                names=r.row_names[lo:hi],
            )
            return {kind: ({"reprs": rows}, None)}

        self._fill(r, {kind: key}, len(prompt_ids), reprs_batch, "representations")
        reprs = gather_rows(self.store, kind, len(prompt_ids), self.dist)["reprs"]
        self.timings[f"representations:{r.source}"] = time.perf_counter() - start
        return reprs

    def rept_layers(
        self, role: str, examples: Sequence[Example], source: str, layers: Sequence[int]
    ) -> tuple[dict[int, torch.Tensor], int]:
        """RepT features ``[n, 2h]`` at each of ``layers`` (``hidden_states`` indices) in one
        pass per batch, kinds ``rept-<layer>:<role>`` (the layer sweep); and the truncated count."""
        r = _Role(role, examples, source, frozenset({Feature.REPT}))
        return self._rept(r, list(layers)), r.truncated

    def _rept(self, r: _Role, layers: list[int] | None = None):
        """RepT features ``[n, 2h]`` at ``settings.rept_layer`` on the response loss
        (:mod:`attriblm.features.rept`), kind ``rept:<role>``; with ``layers``, a dict of them
        per layer (kinds ``rept-<layer>:<role>``)."""
        start = time.perf_counter()
        settings, loaded = self.settings, self.loaded
        response = replace(settings, loss_mask="response")  # RepT's loss, whatever the mask
        if r.encoded is None:
            encoded, r.truncated = encode_with_warning(r.examples, loaded, response, r.source)
        elif settings.loss_mask == "response":
            encoded = r.encoded
        else:  # truncation was counted (and warned about) with the gradients
            encoded = encode_examples(
                r.examples,
                loaded.tokenizer,
                template=settings.template,
                max_length=settings.max_length,
                source=r.source,
            )
        if layers is None:
            chosen = [resolve_layer(settings.rept_layer, n_layers(loaded.model))]
            kinds = {chosen[0]: r.kind("rept")}
            what = "RepT features"
        else:
            chosen, kinds = layers, {layer: r.kind(f"rept-{layer}") for layer in layers}
            what = f"RepT features, {len(layers)} layers"
        keys = {
            kinds[layer]: settings_key({"data": r.data, "layer": layer, "loss_mask": "response"})
            for layer in chosen
        }

        def batch(lo: int, hi: int) -> Computed:
            rows = rept_features(
                loaded.model,
                encoded[lo:hi],
                pad_token_id=loaded.tokenizer.pad_token_id,
                layers=chosen,
                batch_size=settings.batch_size,
                names=r.row_names[lo:hi],
            )
            return {kinds[layer]: ({"rept": rows[layer]}, None) for layer in chosen}

        self._fill(r, keys, len(encoded), batch, what)
        out = {
            layer: gather_rows(self.store, kinds[layer], len(encoded), self.dist)["rept"]
            for layer in chosen
        }
        self.timings[f"rept:{r.source}"] = time.perf_counter() - start
        return out[chosen[0]] if layers is None else out
