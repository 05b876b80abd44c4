"""LoRA wrapping and the LoRA matrices that gradient features and diagnoses read.

Block convention (docs/DESIGN.md §2): every ``lora_A`` and every ``lora_B`` ``nn.Linear`` of the
active adapter is one gradient block, named like ``layers.0.self_attn.q_proj.lora_A``. A LoRA module
computes ``W x + scaling · B A x`` with ``A [r, in]``, ``B [out, r]``, ``scaling = alpha / r``;
its weight change is ``Δθ = scaling · B A`` ``[out, in]``.

``peft`` is imported inside functions: it is slow to import.
"""

from __future__ import annotations

import contextlib
import statistics
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

from attriblm.errors import ConfigError, ModelError, one_line

_WRAPPER_PREFIXES = ("base_model.model.", "model.")


@dataclass
class LoraSettings:
    """LoRA hyper-parameters; the defaults are the study's (r 4, alpha 32, dropout 0.1, q/v)."""

    r: int = 4
    alpha: int = 32
    dropout: float = 0.1
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")

    def to_dict(self) -> dict:
        """Plain, YAML/JSON-friendly form (``target_modules`` as a list)."""
        data = asdict(self)
        data["target_modules"] = list(self.target_modules)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> LoraSettings:
        """Inverse of :meth:`to_dict`; unknown keys are a :class:`ConfigError`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"unknown LoRA setting(s) {unknown}; expected some of {sorted(known)}"
            )
        values = dict(data)
        if "target_modules" in values:
            modules = values["target_modules"]
            values["target_modules"] = (modules,) if isinstance(modules, str) else tuple(modules)
        return cls(**values)

    def validate(self) -> None:
        """ConfigError (naming the CLI option) for values no adapter can use."""
        if self.r < 1:
            raise ConfigError(f"--lora-r must be at least 1, got {self.r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"--lora-dropout must be in [0, 1), got {self.dropout}")
        if not self.target_modules:
            raise ConfigError("--lora-targets must name at least one module")


def has_lora(model: torch.nn.Module) -> bool:
    """Whether any module of ``model`` carries a LoRA adapter."""
    return any(True for _ in _lora_layers(model))


def add_lora(model: torch.nn.Module, settings: LoraSettings, seed: int = 42):
    """Wrap a plain causal LM in a fresh LoRA adapter (``PeftModel``, task ``CAUSAL_LM``).

    ``lora_A`` is initialised from ``seed`` (the global RNG state is restored afterwards) and
    ``lora_B`` is zero, so the wrapped model computes the same function as ``model``. Only the LoRA
    matrices require grad. ``model`` is modified in place (peft injects the layers).
    """
    from peft import LoraConfig, get_peft_model

    if has_lora(model):
        raise ModelError("the model already has a LoRA adapter; start from the plain base model")
    settings.validate()
    config = LoraConfig(
        task_type="CAUSAL_LM",
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
    )
    devices = [model.device.index or 0] if _on_cuda(model) else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        try:
            with quiet_peft_warnings():
                return get_peft_model(model, config)
        except ValueError as exc:
            raise ModelError(
                f"cannot add LoRA on target modules {list(settings.target_modules)}: "
                f"{one_line(exc)}"
            ) from exc


@contextlib.contextmanager
def quiet_peft_warnings() -> Iterator[None]:
    """Hide a transformers deprecation warning that peft triggers on every wrap."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        yield


def _on_cuda(model: torch.nn.Module) -> bool:
    param = next(model.parameters(), None)
    return param is not None and param.device.type == "cuda"


def _lora_layers(model: torch.nn.Module) -> Iterator[tuple[str, torch.nn.Module, str]]:
    """``(readable module name, LoRA layer, adapter name)`` for each active adapter, in order."""
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # pragma: no cover - peft is a dependency
        return
    for name, module in model.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        for adapter in module.active_adapters:
            if adapter in module.lora_A:
                yield _readable_name(name), module, adapter


def _readable_name(name: str) -> str:
    """Drop peft's wrapper prefixes: ``base_model.model.model.layers.0...`` → ``layers.0...``."""
    for prefix in _WRAPPER_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
    return name


def lora_linears(model: torch.nn.Module) -> list[tuple[str, torch.nn.Linear]]:
    """Every ``lora_A`` / ``lora_B`` linear of the active adapter, in module order.

    Names are ``<module>.lora_A`` / ``<module>.lora_B`` (e.g. ``layers.0.self_attn.q_proj.lora_A``);
    an adapter other than ``default`` is appended as a suffix (``...lora_A.<adapter>``). Weights
    are ``[r, in]`` for A and ``[out, r]`` for B; one gradient block per entry.
    """
    blocks: list[tuple[str, torch.nn.Linear]] = []
    for name, layer, adapter in _lora_layers(model):
        suffix = "" if adapter == "default" else f".{adapter}"
        for kind in ("lora_A", "lora_B"):
            linear = getattr(layer, kind)[adapter]
            if not isinstance(linear, torch.nn.Linear):
                raise ModelError(
                    f"LoRA on {name} is a {type(linear).__name__}, not a linear layer; "
                    "only linear LoRA targets are supported"
                )
            blocks.append((f"{name}.{kind}{suffix}", linear))
    return blocks


@torch.no_grad()
def lora_delta_norms(model: torch.nn.Module) -> dict[str, float]:
    """``‖scaling · B A‖_F`` (the weight change Δθ) for each LoRA module, keyed by module name.

    Names are like ``layers.0.self_attn.q_proj`` (adapter suffix as in :func:`lora_linears`).
    Computed in float64. Zero right after :func:`add_lora`, because ``B`` starts at zero.
    """
    norms: dict[str, float] = {}
    for name, layer, adapter in _lora_layers(model):
        suffix = "" if adapter == "default" else f".{adapter}"
        a = layer.lora_A[adapter].weight.double()
        b = layer.lora_B[adapter].weight.double()
        scaling = float(layer.scaling[adapter])
        norms[name + suffix] = float(torch.linalg.matrix_norm(scaling * (b @ a)))
    return norms


def lora_delta_summary(model: torch.nn.Module) -> dict[str, Any]:
    """``‖Δθ‖`` over LoRA modules (:func:`lora_delta_norms`): ``{"mean", "std" (population),
    "max", "per_module": {name: norm}}``; all zeros (and ``{}``) for a model without LoRA."""
    norms = lora_delta_norms(model)
    values = list(norms.values())
    return {
        "mean": statistics.fmean(values) if values else 0.0,
        "std": statistics.pstdev(values) if values else 0.0,
        "max": max(values) if values else 0.0,
        "per_module": norms,
    }
