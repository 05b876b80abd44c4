"""Per-example gradients at each saved adapter checkpoint (features for TracIn).

Each checkpoint's LoRA weights are loaded into the same PEFT model in turn (no base-model
reload); the model's own adapter weights are restored afterwards, also on error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch

from attriblm.data.tokenize import EncodedExample
from attriblm.errors import ModelError
from attriblm.features.gradients import per_example_gradients

ADAPTER_FILE = "adapter_model.safetensors"


@contextmanager
def adapter_weights(model: torch.nn.Module, adapter_dir: Path) -> Iterator[None]:
    """Temporarily load the LoRA weights saved in ``adapter_dir`` into ``model``."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = Path(adapter_dir) / ADAPTER_FILE
    if not weights.is_file():
        raise ModelError(f"checkpoint {adapter_dir} has no {ADAPTER_FILE}")
    state_now = get_peft_model_state_dict(model, save_embedding_layers=False)
    saved = {k: v.detach().clone() for k, v in state_now.items()}
    device = next(model.parameters()).device
    state = {k: v.to(device) for k, v in load_file(str(weights)).items()}
    try:
        result = set_peft_model_state_dict(model, state)
        unexpected = getattr(result, "unexpected_keys", None) or []
        if unexpected:
            raise ModelError(f"checkpoint {adapter_dir} does not fit the model: {unexpected[0]}")
        yield
    finally:
        set_peft_model_state_dict(model, saved)


def matches_current_weights(model: torch.nn.Module, adapter_dir: Path) -> bool:
    """True when the LoRA weights saved in ``adapter_dir`` equal ``model``'s own, bit for bit."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    weights = Path(adapter_dir) / ADAPTER_FILE
    if not weights.is_file():
        return False
    saved = load_file(str(weights))
    current = get_peft_model_state_dict(model, save_embedding_layers=False)
    if set(saved) != set(current):
        return False
    return all(torch.equal(saved[k], current[k].detach().cpu()) for k in saved)


def checkpoint_gradients(
    model: torch.nn.Module,
    checkpoints: Sequence[Path],
    encoded: Sequence[EncodedExample],
    *,
    pad_token_id: int,
    batch_size: int = 16,
    progress: Callable[[int], Callable[[int], None] | None] | None = None,
    names: Sequence[str] = (),
    current_gradients: dict[str, torch.Tensor] | None = None,
) -> list[dict[str, torch.Tensor]]:
    """One :func:`per_example_gradients` dict per checkpoint, in the given order.

    ``progress(c)`` returns the progress callback for checkpoint ``c`` (or ``None``).
    ``current_gradients`` are the same examples' gradients at the model's own adapter weights
    (same batch size); a checkpoint with exactly those weights (usually the last epoch) reuses
    them instead of a second pass, which yields identical values.
    """
    out = []
    for c, ckpt in enumerate(checkpoints):
        if current_gradients is not None and matches_current_weights(model, ckpt):
            out.append(current_gradients)
            continue
        with adapter_weights(model, ckpt):
            out.append(
                per_example_gradients(
                    model,
                    encoded,
                    pad_token_id=pad_token_id,
                    batch_size=batch_size,
                    progress=None if progress is None else progress(c),
                    names=names,
                )
            )
    return out
