"""The fine-tune's final AdamW moments, saved beside the adapter (what LESS reads).

Files in the adapter directory (written by :func:`save_optimizer_state`, safetensors + JSON,
never a pickle)::

    optimizer_state.safetensors   exp_avg/<block>, exp_avg_sq/<block>: float32, the LoRA
                                  matrix's shape ([r, in] for lora_A, [out, r] for lora_B)
    optimizer_state.json          format, optimizer, betas, eps, weight_decay, step, lr,
                                  blocks (name -> shape), the tensor file's sha256

Block names are the gradient block names of :func:`attriblm.models.lora.lora_linears`
(``layers.0.self_attn.q_proj.lora_A``), so moment ``b`` flattened row-major lines up with
gradient block ``b``. The JSON file is written last: a directory with both files is complete.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from attriblm.errors import ConfigError, DataError, ModelError
from attriblm.io import load_tensors, read_json, save_tensors, write_json
from attriblm.models.lora import lora_linears

STATE_TENSORS = "optimizer_state.safetensors"
STATE_INFO = "optimizer_state.json"
FORMAT = "attriblm-adam-moments/1"
HOW_TO_GET = (
    "re-run `attriblm finetune` with this attriblm version, which saves them with the adapter"
)


@dataclass(frozen=True)
class AdamMoments:
    """AdamW's first and second moments after the last step, per LoRA block.

    Attributes:
        exp_avg, exp_avg_sq: block name → ``[d_b]`` float32 (the matrix flattened row-major).
        beta1, beta2, eps: the optimizer's hyper-parameters; ``step``: steps taken.
        digest: sha256 of the tensor file (identifies the moments in feature-store keys).
    """

    exp_avg: dict[str, torch.Tensor]
    exp_avg_sq: dict[str, torch.Tensor]
    beta1: float
    beta2: float
    eps: float
    step: int
    digest: str = ""


def save_optimizer_state(
    optimizer: torch.optim.Optimizer, model: torch.nn.Module, adapter_dir: Path | str
) -> None:
    """Write the moments of every LoRA matrix of ``model`` held by ``optimizer`` (module doc)."""
    adapter_dir = Path(adapter_dir)
    group = optimizer.param_groups[0]
    tensors: dict[str, torch.Tensor] = {}
    shapes: dict[str, list[int]] = {}
    step = 0
    for name, linear in lora_linears(model):
        state = optimizer.state.get(linear.weight)
        if not state or "exp_avg" not in state:
            raise ModelError(f"the optimizer holds no Adam moments for LoRA block {name}")
        tensors[f"exp_avg/{name}"] = state["exp_avg"].detach().float()
        tensors[f"exp_avg_sq/{name}"] = state["exp_avg_sq"].detach().float()
        shapes[name] = list(linear.weight.shape)
        step = int(state["step"])
    path = save_tensors(adapter_dir / STATE_TENSORS, tensors)
    beta1, beta2 = group["betas"]
    write_json(
        adapter_dir / STATE_INFO,
        {
            "format": FORMAT,
            "optimizer": type(optimizer).__name__,
            "betas": [float(beta1), float(beta2)],
            "eps": float(group["eps"]),
            "weight_decay": float(group.get("weight_decay", 0.0)),
            "lr": float(group["lr"]),
            "step": step,
            "blocks": shapes,
            "sha256": _sha256(path),
        },
    )


def has_optimizer_state(adapter_dir: Path | str) -> bool:
    """Whether ``adapter_dir`` holds both moment files."""
    root = Path(adapter_dir)
    return (root / STATE_INFO).is_file() and (root / STATE_TENSORS).is_file()


def load_optimizer_state(adapter_dir: Path | str, *, method: str = "less") -> AdamMoments:
    """The moments saved in ``adapter_dir``; ConfigError saying how to get them when absent."""
    root = Path(adapter_dir)
    if not has_optimizer_state(root):
        raise ConfigError(
            f"method '{method}' needs the fine-tune's final AdamW moments, but the adapter "
            f"{root} has no {STATE_INFO}; {HOW_TO_GET}"
        )
    info = read_json(root / STATE_INFO)
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise DataError(f"{root / STATE_INFO}: not an attriblm optimizer-state file ({FORMAT})")
    digest = _sha256(root / STATE_TENSORS)
    if digest != info.get("sha256"):
        raise DataError(
            f"{root / STATE_TENSORS}: does not match {STATE_INFO} (sha256 differs); {HOW_TO_GET}"
        )
    tensors = load_tensors(root / STATE_TENSORS)
    exp_avg, exp_avg_sq = {}, {}
    for name in info["blocks"]:
        try:
            exp_avg[name] = tensors[f"exp_avg/{name}"].flatten()
            exp_avg_sq[name] = tensors[f"exp_avg_sq/{name}"].flatten()
        except KeyError:
            raise DataError(f"{root / STATE_TENSORS}: no moments for block {name}") from None
    beta1, beta2 = info["betas"]
    return AdamMoments(
        exp_avg=exp_avg,
        exp_avg_sq=exp_avg_sq,
        beta1=float(beta1),
        beta2=float(beta2),
        eps=float(info["eps"]),
        step=int(info["step"]),
        digest=digest,
    )


def moments_of(identity: dict, *, method: str = "less") -> AdamMoments:
    """The moments beside a loaded model's adapter (``identity["adapter"]``)."""
    adapter = identity.get("adapter")
    if adapter is None:
        raise ConfigError(
            f"method '{method}' needs the fine-tune's final AdamW moments, but no adapter is "
            "loaded (--adapter)"
        )
    return load_optimizer_state(adapter, method=method)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
