"""Atomic file and directory writes, and the only loaders attriblm uses (JSON, YAML, safetensors).

Every write goes to a temporary sibling first and is moved into place with ``os.replace``, so a
killed process leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file

from attriblm.errors import DataError, FileFormatError


def _temp_sibling(path: Path, suffix: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f"{suffix}.tmp", dir=path.parent)
    os.close(fd)
    return Path(name)


def write_text(path: Path | str, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    path = Path(path)
    tmp = _temp_sibling(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_bytes(path: Path | str, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    path = Path(path)
    tmp = _temp_sibling(path)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path | str, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_jsonl(path: Path | str, rows: Iterable[dict]) -> Path:
    return write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def write_yaml(path: Path | str, obj: Any) -> Path:
    return write_text(path, yaml.safe_dump(obj, sort_keys=False))


def read_json(path: Path | str) -> Any:
    """Parse a UTF-8 JSON file; FileFormatError naming it when it is not valid JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FileFormatError(f"{path}: not valid JSON ({error})") from None


def read_yaml(path: Path | str) -> Any:
    """Parse a UTF-8 YAML file (safe loader); FileFormatError naming it when it is not valid."""
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise FileFormatError(f"{path}: not valid YAML ({reason})") from None


def save_tensors(path: Path | str, tensors: dict[str, torch.Tensor]) -> Path:
    """Save tensors as safetensors, atomically (contiguous CPU copies)."""
    path = Path(path)
    tmp = _temp_sibling(path, ".safetensors")
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load_tensors(path: Path | str) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file; DataError naming the file when it is missing,
    unreadable or not safetensors (e.g. garbage bytes, a truncated copy)."""
    from safetensors import SafetensorError

    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, SafetensorError) as error:
        reason = getattr(error, "strerror", None) or (str(error).splitlines() or ["?"])[0]
        raise DataError(f"{path}: cannot read safetensors file ({reason})") from None


@contextmanager
def staged_directory(final: Path | str) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces ``final`` as a whole.

    On an exception the temporary directory is removed and ``final`` is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        yield staging
        replace_directory(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def replace_directory(source: Path, final: Path) -> None:
    """Move directory ``source`` to ``final``, replacing an existing ``final`` last.

    If moving ``source`` in fails, the previous ``final`` is put back before the error propagates.
    """
    if not final.exists():
        os.replace(source, final)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
    try:
        os.replace(final, old / "previous")
        try:
            os.replace(source, final)
        except BaseException:
            os.replace(old / "previous", final)
            raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
