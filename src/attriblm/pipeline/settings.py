"""The settings of an attribution run: every option that decides its numbers, checked in one place.

:class:`AttributeSettings` is saved whole in a run's ``config.yaml`` (under ``resolved:
settings:``, :meth:`AttributeSettings.to_dict`) and read back with
:meth:`AttributeSettings.from_dict`. Checks that need the methods (projection × K-FAC) live in
:class:`attriblm.pipeline.plan.FeaturePlan`; checks that need the data in
:meth:`AttributeSettings.check_data`.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from attriblm import validation as check
from attriblm.data.schema import Example
from attriblm.data.templates import check_same_formatting, check_template
from attriblm.data.tokenize import check_loss_mask
from attriblm.errors import ConfigError
from attriblm.features.adam import LESS_PROJ_DIM
from attriblm.features.projection import PROJECTION_KINDS, Projection
from attriblm.features.store import check_store_dtype
from attriblm.methods.damping import Damping
from attriblm.methods.registry import check_method_options


@dataclass
class AttributeSettings:
    """Everything that decides an attribution run's numbers (saved in ``config.yaml``).

    Feature store (:mod:`attriblm.features.store`): ``store`` is its directory (default
    ``OUT.store``, removed after success unless ``keep_store``; an explicit one is kept);
    ``store_dtype`` ``fp32`` | ``bf16`` | ``fp16`` (:mod:`attriblm.features.row_codec`);
    ``proj_dim`` / ``proj_kind`` / ``proj_seed`` project each gradient block wider than
    ``proj_dim`` (:mod:`attriblm.features.projection`); LESS features are projected the same
    way, with ``proj_dim`` defaulting to 8192 for them. ``rept_layer``: RepT's layer, 1-based,
    ``-1`` = the last. ``options``: each method's own constructor options, ``{method: {key:
    value}}`` (``--option METHOD.KEY=VALUE``; :func:`attriblm.methods.registry.accepted_options`).
    """

    methods: list[str] = field(default_factory=lambda: ["all"])
    template: str = "llama2"
    loss_mask: str = "response"
    max_length: int = 128
    batch_size: int = 16
    damping_mode: str = "relative"
    damping: float = 0.1
    repsim_layer: int = -1
    repsim_pooling: str = "last"
    rept_layer: int = -1
    topk: int = 10
    checkpoints: str | None = None
    factors: str | None = None
    store: str | None = None
    keep_store: bool = False
    store_dtype: str = "fp32"
    proj_dim: int | None = None
    proj_kind: str = "gaussian"
    proj_seed: int = 0
    options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """ConfigError naming the option for a value no run can use (also on construction;
        :func:`attriblm.pipeline.attribute.attribute` checks again, after any change)."""
        from attriblm.features.representations import POOLINGS

        if isinstance(self.methods, str) or not all(isinstance(m, str) for m in self.methods):
            raise ConfigError(f"--method: expected a list of method names, got {self.methods!r}")
        check_template(self.template)
        check_loss_mask(self.loss_mask)
        check.integer("max_length", self.max_length, 2)
        check.integer("batch_size", self.batch_size, 1)
        check.integer("topk", self.topk, 1)
        check.integer("repsim_layer", self.repsim_layer)
        check.one_of("repsim_pooling", self.repsim_pooling, POOLINGS)
        self.damping_rule()
        if self.proj_dim is not None:
            check.integer("proj_dim", self.proj_dim, 1)
        check.one_of("proj_kind", self.proj_kind, PROJECTION_KINDS)  # even without --proj-dim
        check.integer("proj_seed", self.proj_seed)
        check_store_options(self)
        check_method_options(self.options, self.methods)

    def damping_rule(self) -> Damping:
        """The per-block damping rule every damped method gets (``damping_mode``, ``damping``)."""
        return Damping(self.damping_mode, self.damping)

    def projection(self) -> Projection | None:
        """The random projection of gradient blocks (``proj_dim`` set), else ``None``."""
        if self.proj_dim is None:
            return None
        return Projection(dim=int(self.proj_dim), kind=self.proj_kind, seed=int(self.proj_seed))

    def less_projection(self) -> Projection:
        """The projection of LESS features: ``proj_dim`` (default 8192), kind and seed."""
        dim = LESS_PROJ_DIM if self.proj_dim is None else int(self.proj_dim)
        return Projection(dim=dim, kind=self.proj_kind, seed=int(self.proj_seed))

    def check_data(
        self, sources: Mapping[str, str], train: Sequence[Example], queries: Sequence[Example]
    ) -> None:
        """Warn when the prompts already carry chat-template markup that ``template`` adds."""
        pairs = [(sources["train"], train), (sources["queries"], queries)]
        family = check_same_formatting(pairs)
        if family is not None:
            warnings.warn(
                f"{sources['train']}: prompts already carry {family} chat-template markup and "
                f"--template {self.template} wraps them again; give raw prompts",
                stacklevel=3,
            )

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON/YAML-ready (a deep copy); :meth:`from_dict` reads it back."""
        return copy.deepcopy(asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AttributeSettings:
        """Settings from :meth:`to_dict`'s mapping; ConfigError naming an unknown key or value."""
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"attribution settings: expected a mapping, got {type(data).__name__}"
            )
        known = [f.name for f in fields(cls)]
        unknown = [k for k in data if k not in known]
        if unknown:
            raise ConfigError(
                f"attribution settings: unknown key {unknown[0]!r}; known: {', '.join(known)}"
            )
        return cls(**copy.deepcopy(dict(data)))


def check_store_options(settings: AttributeSettings) -> None:
    """ConfigError naming the option for a bad ``store_dtype`` / ``proj_*`` value."""
    check_store_dtype(settings.store_dtype)
    settings.projection()
