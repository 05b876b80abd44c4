"""Which features a set of methods needs, decided and checked once (docs/DESIGN.md §2).

Methods declare feature needs by name (:data:`attriblm.methods.base.FEATURE_KINDS`);
:meth:`FeaturePlan.from_methods` turns them into :class:`Feature` values per role and rejects
combinations no run can compute (K-FAC methods with a projection). :func:`create_methods`
builds the methods of a run from its settings, with the options derived from them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from attriblm.errors import ConfigError
from attriblm.methods.base import AttributionMethod, method_needs
from attriblm.methods.registry import create_method, expand_method_names, get_method_class
from attriblm.pipeline.settings import AttributeSettings
from attriblm.rundir import method_file


class Feature(Enum):
    """One kind of per-example feature (the store kind it is kept under, per role)."""

    GRADIENTS = "grads"  # per-example LoRA gradients, one block per LoRA matrix
    KFAC_STATS = "kfac"  # per-batch K-FAC sums (train only; gathered into factors)
    CHECKPOINT_GRADIENTS = "ckpt"  # gradients at each fine-tune checkpoint (TracIn)
    REPRESENTATIONS = "reprs"  # pooled hidden states (RepSim)
    REPT = "rept"  # hidden state ⊕ its loss gradient (RepT)
    ADAM = "adam"  # Adam-update (train) / plain (queries) projected gradients (LESS)


# method need (FEATURE_KINDS) -> the features it takes, on both roles
_FROM_NEED: dict[str, tuple[Feature, ...]] = {
    "gradients": (Feature.GRADIENTS,),
    "kfac": (Feature.GRADIENTS,),  # + Feature.KFAC_STATS on the train side, unless --factors
    "checkpoints": (Feature.CHECKPOINT_GRADIENTS,),
    "representations": (Feature.REPRESENTATIONS,),
    "representation-gradients": (Feature.REPT,),
    "adam-gradients": (Feature.ADAM,),
}
ROLES = ("train", "queries")


@dataclass(frozen=True)
class FeaturePlan:
    """The features to compute per role, and whether the train gradients stay in the store.

    Attributes:
        features: role (``train`` / ``queries``) → the features that role needs.
        stream: every method scores from the store (:attr:`AttributionMethod.streams`): the
            train gradients are not loaded whole.
        kfac_methods: the methods that need K-FAC factors (named in messages).
    """

    features: Mapping[str, frozenset[Feature]]
    stream: bool = False
    kfac_methods: tuple[str, ...] = ()

    @classmethod
    def from_methods(
        cls,
        methods: Mapping[str, AttributionMethod | type[AttributionMethod]],
        settings: AttributeSettings,
        *,
        allow_stream: bool = False,
    ) -> FeaturePlan:
        """The plan for ``methods`` (name → method or class) under ``settings``.

        ConfigError for K-FAC methods with ``proj_dim`` (the factors live in the full LoRA
        space). ``allow_stream``: stream when every method can (single-process runs).
        """
        needs = {name: method_needs(m) for name, m in methods.items()}
        kfac_methods = tuple(name for name, n in needs.items() if "kfac" in n)
        if kfac_methods and settings.proj_dim is not None:
            raise ConfigError(
                f"--proj-dim: {', '.join(kfac_methods)} need unprojected gradients (K-FAC "
                "factors live in the full LoRA space); drop --proj-dim or those methods"
            )
        shared = frozenset(f for n in needs.values() for need in n for f in _FROM_NEED[need])
        train = shared | ({Feature.KFAC_STATS} if kfac_methods and not settings.factors else set())
        stream = allow_stream and bool(methods) and all(m.streams for m in methods.values())
        return cls(
            features={"train": frozenset(train), "queries": shared},
            stream=stream,
            kfac_methods=kfac_methods,
        )

    def needs(self, feature: Feature, role: str | None = None) -> bool:
        """Whether ``role`` (default: either) needs ``feature``."""
        roles = ROLES if role is None else (role,)
        return any(feature in self.features[r] for r in roles)


def resolve_methods(
    methods: Sequence[str],
    *,
    accept: Callable[[type[AttributionMethod]], bool] | None = None,
    refuse: Callable[[list[str]], str] | None = None,
) -> list[str]:
    """``--method`` values as registered names (``all`` expanded, duplicates dropped).

    ``accept`` (a diagnosis's rule on method classes): ``all`` keeps only accepted methods and
    a named method it refuses is a ConfigError with ``refuse(names)``. ConfigError for an
    unknown name or an empty list.
    """
    names = expand_method_names(methods)
    if accept is not None:
        if any(m == "all" for m in methods):
            names = [m for m in names if accept(get_method_class(m))]
        bad = [m for m in names if not accept(get_method_class(m))]
        if bad:
            raise ConfigError(refuse(bad) if refuse is not None else f"method(s) {bad} not allowed")
    if not names:
        raise ConfigError("no methods to run (--method)")
    return names


def create_methods(
    names: Sequence[str], settings: AttributeSettings
) -> dict[str, AttributionMethod]:
    """``{name: method}`` built with the options ``settings`` derives (damping, factor file)
    and the user's ``settings.options[name]``."""
    return {name: _create(name, settings) for name in names}


def _create(name: str, settings: AttributeSettings) -> AttributionMethod:
    options: dict = {"damping": settings.damping_rule()}
    if settings.factors is not None and "kfac" in method_needs(get_method_class(name)):
        options["factors"] = str(Path(settings.factors) / method_file(name))
    options.update(settings.options.get(name, {}))
    return create_method(name, **options)
