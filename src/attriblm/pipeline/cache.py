"""Content keys for cached pipeline stages: same inputs → same key → the stage is skipped."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from attriblm.data.schema import Example


def content_key(*parts: object) -> str:
    """A short SHA-256 of the JSON form of ``parts`` (dicts are key-sorted)."""
    blob = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def examples_key(examples: Sequence[Example]) -> str:
    """Key of a list of examples, order included (score columns follow it)."""
    return content_key([asdict(e) for e in examples])


def model_key(spec: str) -> dict:
    """What identifies a model spec: the name for built-ins, the config of a local directory."""
    if spec in ("default", "tiny"):
        if spec == "default":
            from attriblm.models.default import gguf_source

            source = gguf_source()
            return {"spec": spec, "version": source["version"], "size": source["size"]}
        return {"spec": spec}
    config = Path(spec) / "config.json"
    digest = hashlib.sha256(config.read_bytes()).hexdigest() if config.is_file() else None
    weights = sorted((p.name, p.stat().st_size) for p in Path(spec).glob("*.safetensors"))
    return {"spec": str(Path(spec).resolve()), "config": digest, "weights": weights}
