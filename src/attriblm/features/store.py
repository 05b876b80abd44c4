"""A disk-backed, sharded, resumable store of per-example features.

Layout of a store directory::

    STORE/manifest.json
    STORE/grads.train/000000000-000000016.safetensors     one shard: rows 0..15 of "grads:train"
    STORE/kfac.train/000000000-000000016.safetensors      K-FAC partial sums of the same rows
    STORE/reprs.queries/...

A *kind* (``grads:train``, ``grads:queries``, ``reprs:train``, ``ckpt-0:train``, ``kfac:train``,
...) is one example set's feature of one sort. Its shards are safetensors files holding, for the
shard's rows ``[start, stop)``, one ``[stop − start, d_b]`` tensor per block (*rows*), and
optionally *stats*: tensors summed over the rows (stored as ``stats/<name>``, e.g. K-FAC
covariance sums and token counts), which add up across shards.

``manifest.json`` (written atomically): ``format``, ``key`` (a hash of the producing settings;
``settings`` holds them in clear), ``dtype``, ``projection``, and per kind: ``key`` (its data
identity), ``n_rows``, ``project``, ``blocks`` (name → stored width, in block order),
``source_widths`` (widths before projection), ``stats`` (names in order) and ``shards``
(``file``, ``start``, ``stop``, ``bytes``, ``sha256``).

``shards.jsonl``, the journal: one JSON line per shard written since the manifest was last
rewritten, appended after the shard file is in place, so together they list exactly the
complete shards. Appending keeps a shard's bookkeeping O(1); the manifest absorbs the journal
(and the journal is deleted) on opening, on declaring a kind, at the end of a fill
(:meth:`FeatureStore.compact`) and whenever the journal holds more lines than half the listed
shards (and 64), so the total bookkeeping written stays linear in the number of shards.
:func:`listed_shards` reads both without changing anything.

Resume rule: opening a store whose manifest has the same settings key keeps its shards (after a
size check); a kind declared again with the same data key, row count and projection flag keeps
its shards, and :meth:`FeatureStore.pending` lists the row ranges still to compute. Any mismatch
starts that store (or kind) afresh. One writer per store at a time (``attribute`` locks it:
:func:`attriblm.outputs.output_lock`).

Storage dtype (:mod:`attriblm.features.row_codec`): ``fp32`` (exact), ``bf16`` (half the disk;
relative error up to 2⁻⁹ per entry) or ``fp16`` (half the disk; rows scaled by their largest
entry, stored as ``rowscale/<block>`` float32 ``[rows]``, so nothing underflows; relative error
up to 2⁻¹¹); reads return float32. Stats are always stored as given (float64).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from attriblm.errors import AttriblmError, ConfigError, DataError
from attriblm.features.projection import Projection
from attriblm.features.row_codec import STORE_DTYPES, decode_rows, encode_rows
from attriblm.io import read_json, write_bytes, write_json

FORMAT = "attriblm-feature-store/1"
MANIFEST = "manifest.json"
JOURNAL = "shards.jsonl"
STATS_PREFIX = "stats/"
SCALE_PREFIX = "rowscale/"
_KIND = re.compile(r"^[A-Za-z0-9_-]+(:[A-Za-z0-9_-]+)?$")
_KIND_DIR = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)?$")
_SHARD = re.compile(r"^\d{9}-\d{9}\.safetensors$")

Range = tuple[int, int]


def check_store_dtype(dtype: str) -> None:
    """ConfigError naming ``--store-dtype`` unless ``dtype`` is ``fp32``, ``bf16`` or ``fp16``."""
    if dtype not in STORE_DTYPES:
        raise ConfigError(
            f"unknown store dtype '{dtype}' (--store-dtype); choose {' | '.join(STORE_DTYPES)}"
        )


def settings_key(obj: Any) -> str:
    """SHA-256 hex of ``obj`` as canonical JSON (sorted keys; non-JSON values via ``str``)."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def tensors_digest(tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    """SHA-256 hex of named tensors' names, dtypes, shapes and bytes (e.g. LoRA weights)."""
    digest = hashlib.sha256()
    for name, tensor in tensors:
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{list(t.shape)};".encode())
        digest.update(t.flatten().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def batch_ranges(n_rows: int, batch_size: int) -> list[Range]:
    """``[start, stop)`` of each batch: ``[0, b), [b, 2b), …`` (the last may be shorter)."""
    return [(s, min(s + batch_size, n_rows)) for s in range(0, n_rows, batch_size)]


def _kind_dir(kind: str) -> str:
    if not _KIND.match(kind):
        raise ValueError(f"invalid feature kind {kind!r}: letters, digits, '_', '-', one ':'")
    return kind.replace(":", ".")


class FeatureStore:
    """Per-example features in shards, on disk under ``root`` (or in memory when ``root=None``).

    Args:
        root: the store directory (created if missing); ``None`` keeps shards in memory (same
            interface, nothing persists, no manifest).
        settings: JSON-serialisable facts that decide every kind's numbers (model, adapter
            weights digest, batch size, ...); their hash is the store's key.
        dtype: storage dtype of rows, ``fp32``, ``bf16`` or ``fp16`` (row-scaled); reads
            return float32.
        projection: applied to the rows of kinds declared with ``project=True`` before storing.
        if_mismatch: an existing store made with other settings is wiped and started afresh
            (``"fresh"``; :attr:`reset_reason` says why) or refused with ``ConfigError``
            (``"error"``).
    """

    def __init__(
        self,
        root: Path | str | None,
        settings: Mapping[str, Any] | None = None,
        *,
        dtype: str = "fp32",
        projection: Projection | None = None,
        if_mismatch: str = "fresh",
    ) -> None:
        check_store_dtype(dtype)
        if if_mismatch not in ("fresh", "error"):
            raise ValueError(f"if_mismatch must be 'fresh' or 'error', not {if_mismatch!r}")
        self.root = None if root is None else Path(root)
        self.dtype = dtype
        self.projection = projection
        self.reset_reason: str | None = None
        settings = dict(settings or {})
        proj = None if projection is None else projection.to_json()
        self.key = settings_key(
            {"format": FORMAT, "settings": settings, "dtype": dtype, "proj": proj}
        )
        self.manifest: dict[str, Any] = {
            "format": FORMAT,
            "key": self.key,
            "settings": settings,
            "dtype": dtype,
            "projection": proj,
            "kinds": {},
        }
        self._memory: dict[tuple[str, int], dict[str, torch.Tensor]] = {}
        self._journal_lines = 0
        if self.root is not None:
            self._open(if_mismatch)

    # ------------------------------------------------------------------ opening

    def _open(self, if_mismatch: str) -> None:
        assert self.root is not None
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"{self.root}: exists and is not a directory (--store)")
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / MANIFEST
        if path.exists() or all(_ours(p.name) for p in self.root.iterdir()):
            _remove_temporaries(self.root)  # only in a store: never in someone else's directory
        if path.exists():
            try:
                old = read_json(path)
            except (OSError, ValueError):
                old = None
            if isinstance(old, dict) and old.get("format") == FORMAT and old.get("key") == self.key:
                self.manifest = old
                _replay_journal(self.manifest, self.root / JOURNAL)
                self._drop_damaged_shards()
                self._remove_orphans()
                self.compact()
                return
            reason = "unreadable manifest" if not isinstance(old, dict) else "other settings"
            if if_mismatch == "error":
                raise ConfigError(
                    f"{self.root}: feature store made with {reason}; delete it or choose another "
                    "--store"
                )
            self._wipe()
            self.reset_reason = reason
        elif any(p.name != JOURNAL for p in self.root.iterdir()):
            raise ConfigError(
                f"{self.root}: exists and is not an attriblm feature store (no {MANIFEST}); "
                "choose another --store"
            )
        self._save_manifest()

    def _wipe(self) -> None:
        """Remove the manifest and every kind directory holding only shards (never other files)."""
        assert self.root is not None
        (self.root / MANIFEST).unlink(missing_ok=True)
        (self.root / JOURNAL).unlink(missing_ok=True)
        for child in self.root.iterdir():
            if (
                child.is_dir()
                and _KIND_DIR.match(child.name)
                and all(_SHARD.match(f.name) for f in child.iterdir())
            ):
                shutil.rmtree(child)

    def _drop_damaged_shards(self) -> None:
        """Forget shards whose file is missing or has the wrong size (they are recomputed)."""
        for entry in self.manifest["kinds"].values():
            entry["shards"] = [s for s in entry["shards"] if self._shard_size_ok(entry, s)]

    def _shard_size_ok(self, entry: dict, shard: dict) -> bool:
        path = self._shard_path(entry, shard)
        return path.is_file() and path.stat().st_size == shard["bytes"]

    def _remove_orphans(self) -> None:
        """Delete shard files the manifest does not list (written just before a kill)."""
        for entry in self.manifest["kinds"].values():
            folder = self._dir(entry)
            listed = {s["file"] for s in entry["shards"]}
            if folder.is_dir():
                for f in folder.iterdir():
                    if _SHARD.match(f.name) and f.name not in listed:
                        f.unlink()

    # ------------------------------------------------------------------ kinds

    def begin(self, kind: str, *, n_rows: int, key: str = "", project: bool = False) -> None:
        """Declare ``kind`` with ``n_rows`` rows produced from data identified by ``key``.

        An existing kind with the same key, row count and ``project`` flag keeps its shards;
        otherwise its shards are dropped.
        """
        folder = _kind_dir(kind)
        entry = self.manifest["kinds"].get(kind)
        if entry is not None and (
            entry["key"] != key or entry["n_rows"] != n_rows or entry["project"] != project
        ):
            self._drop_kind(kind)
            entry = None
        if entry is None:
            entry = {
                "key": key,
                "n_rows": int(n_rows),
                "dir": folder,
                "project": bool(project),
                "blocks": None,
                "source_widths": None,
                "stats": None,
                "shards": [],
            }
            self.manifest["kinds"][kind] = entry
            if self.root is not None:
                self._dir(entry).mkdir(exist_ok=True)
                self._save_manifest()

    def _drop_kind(self, kind: str) -> None:
        entry = self.manifest["kinds"].pop(kind)
        self._memory = {k: v for k, v in self._memory.items() if k[0] != kind}
        if self.root is not None:
            shutil.rmtree(self._dir(entry), ignore_errors=True)
            self._save_manifest()

    def kinds(self) -> list[str]:
        return list(self.manifest["kinds"])

    def _entry(self, kind: str) -> dict:
        entry = self.manifest["kinds"].get(kind)
        if entry is None:
            raise AttriblmError(f"feature store {self._where()}: no kind '{kind}' (call begin)")
        return entry

    def done(self, kind: str) -> list[Range]:
        """The ``[start, stop)`` row ranges of ``kind`` already stored, in row order."""
        return [(s["start"], s["stop"]) for s in self._entry(kind)["shards"]]

    def has(self, kind: str, start: int, stop: int) -> bool:
        """Whether a shard of ``kind`` holds exactly rows ``[start, stop)``."""
        return (start, stop) in self.done(kind)

    def pending(self, kinds: Sequence[str], batch_size: int) -> list[Range]:
        """Batch ranges (``batch_ranges(n_rows, batch_size)``) not yet stored for every kind."""
        n_rows = {self._entry(k)["n_rows"] for k in kinds}
        if len(n_rows) != 1:
            raise ValueError(f"kinds {list(kinds)} differ in row count: {sorted(n_rows)}")
        done = [set(self.done(k)) for k in kinds]
        return [r for r in batch_ranges(n_rows.pop(), batch_size) if not all(r in d for d in done)]

    def is_complete(self, kind: str) -> bool:
        entry = self._entry(kind)
        end = 0
        for start, stop in self.done(kind):
            if start != end:
                return False
            end = stop
        return end == entry["n_rows"]

    # ------------------------------------------------------------------ writing

    def write(
        self,
        kind: str,
        start: int,
        stop: int,
        rows: Mapping[str, torch.Tensor],
        stats: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        """Store rows ``[start, stop)`` of ``kind`` as one shard (replacing any overlapping one).

        Args:
            rows: block name → ``[stop − start, d_b]`` tensor (projected if the kind is, then
                cast to the storage dtype).
            stats: name → tensor summed over these rows (stored as is, e.g. float64 sums).
        """
        entry = self._entry(kind)
        stats = dict(stats or {})
        if not rows and not stats:
            raise ValueError("a shard needs rows or stats")
        if not 0 <= start < stop <= entry["n_rows"]:
            raise ValueError(f"rows [{start}, {stop}) outside [0, {entry['n_rows']}) of {kind}")
        stored: dict[str, torch.Tensor] = {}
        scales: dict[str, torch.Tensor] = {}
        for name, t in rows.items():
            if t.dim() != 2 or t.shape[0] != stop - start:
                raise ValueError(f"{kind} block {name}: shape {list(t.shape)}, rows {stop - start}")
            if entry["project"] and self.projection is not None:
                t = self.projection.apply(name, t)
            stored[name], scale = encode_rows(t, self.dtype)
            if scale is not None:
                scales[SCALE_PREFIX + name] = scale
        blocks = {name: int(t.shape[1]) for name, t in stored.items()}
        widths = {name: int(t.shape[1]) for name, t in rows.items()}
        self._check_same(entry, "blocks", blocks, kind)
        self._check_same(entry, "source_widths", widths, kind)
        self._check_same(entry, "stats", list(stats), kind)
        payload = {
            **stored,
            **scales,
            **{STATS_PREFIX + k: v.detach().cpu().contiguous() for k, v in stats.items()},
        }
        shard = {"file": f"{start:09d}-{stop:09d}.safetensors", "start": start, "stop": stop}
        if self.root is None:
            self._memory[(kind, start)] = payload
            shard.update(bytes=0, sha256="")
        else:
            data = save_safetensors(payload)
            write_bytes(self._dir(entry) / shard["file"], data)
            shard.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
        overlapping = _add_shard(entry, shard)
        if self.root is not None:
            # after the shard file is in place: manifest + journal list only complete shards
            self._append_journal(kind, entry, shard)
            for old in overlapping:
                if old["file"] != shard["file"]:
                    self._shard_path(entry, old).unlink(missing_ok=True)

    @staticmethod
    def _check_same(entry: dict, field: str, value: Any, kind: str) -> None:
        if entry[field] is None:
            entry[field] = value
        elif entry[field] != value:
            raise AttriblmError(f"feature store: {kind} {field} changed between shards")

    # ------------------------------------------------------------------ reading

    def iter_rows(self, kind: str) -> Iterator[tuple[int, int, dict[str, torch.Tensor]]]:
        """``(start, stop, block → [stop − start, d_b] float32)`` per shard, in row order."""
        entry = self._entry(kind)
        for shard in entry["shards"]:
            payload = self._load(kind, entry, shard)
            yield shard["start"], shard["stop"], {b: _rows(payload, b) for b in entry["blocks"]}

    def read(self, kind: str) -> dict[str, torch.Tensor]:
        """Block name → ``[n_rows, d_b]`` float32, block order as written (kind complete)."""
        self._require_complete(kind)
        entry = self._entry(kind)
        if not entry["blocks"]:
            return {}
        out = {b: torch.empty(entry["n_rows"], w) for b, w in entry["blocks"].items()}
        for shard in entry["shards"]:
            payload = self._load(kind, entry, shard)
            for b, tensor in out.items():
                tensor[shard["start"] : shard["stop"]] = _rows(payload, b)
        return out

    def blocks(self, kind: str) -> dict[str, int]:
        """Block name → stored width of ``kind``, in block order (empty before a shard)."""
        return dict(self._entry(kind)["blocks"] or {})

    def sum_stats(self, kind: str, *, complete: bool = True) -> dict[str, torch.Tensor]:
        """Each stat summed over the shards in row order (names in the order written).

        ``complete=False`` sums whatever shards are stored (one rank's share of a
        distributed run) instead of requiring every row.
        """
        if complete:
            self._require_complete(kind)
        entry = self._entry(kind)
        total: dict[str, torch.Tensor] = {}
        for shard in entry["shards"]:
            payload = self._load(kind, entry, shard)
            for name in entry["stats"] or []:
                value = payload[STATS_PREFIX + name]
                total[name] = value.clone() if name not in total else total[name] + value
        return total

    def _require_complete(self, kind: str) -> None:
        if not self.is_complete(kind):
            entry = self._entry(kind)
            stored = sum(stop - start for start, stop in self.done(kind))
            raise AttriblmError(
                f"feature store {self._where()}: {kind} is incomplete "
                f"({stored} of {entry['n_rows']} rows stored)"
            )

    def _load(self, kind: str, entry: dict, shard: dict) -> dict[str, torch.Tensor]:
        if self.root is None:
            return self._memory[(kind, shard["start"])]
        path = self._shard_path(entry, shard)
        try:
            data = path.read_bytes()
        except OSError as error:
            raise DataError(f"{path}: cannot read feature store shard ({error})") from None
        if len(data) != shard["bytes"] or hashlib.sha256(data).hexdigest() != shard["sha256"]:
            raise DataError(
                f"{path}: feature store shard is damaged (size or hash differs from the "
                f"manifest); delete {self.root} and rerun"
            )
        return load_safetensors(data)

    # ------------------------------------------------------------------ misc

    def summary(self) -> dict[str, Any]:
        """JSON facts for ``run.json``: path, dtype, projection, rows stored per kind."""
        return {
            "path": None if self.root is None else str(self.root),
            "dtype": self.dtype,
            "projection": self.manifest["projection"],
            "kinds": {
                k: {
                    "n_rows": e["n_rows"],
                    "stored": sum(s["stop"] - s["start"] for s in e["shards"]),
                }
                for k, e in self.manifest["kinds"].items()
            },
        }

    def remove(self) -> None:
        """Delete the store directory (or forget the in-memory shards)."""
        self._memory.clear()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)

    def _where(self) -> str:
        return "(in memory)" if self.root is None else str(self.root)

    def _dir(self, entry: dict) -> Path:
        assert self.root is not None
        return self.root / entry["dir"]

    def _shard_path(self, entry: dict, shard: dict) -> Path:
        return self._dir(entry) / shard["file"]

    def compact(self) -> None:
        """Rewrite the manifest with every stored shard and delete the journal."""
        if self.root is not None:
            self._save_manifest()

    def _save_manifest(self) -> None:
        assert self.root is not None
        write_json(self.root / MANIFEST, self.manifest)
        (self.root / JOURNAL).unlink(missing_ok=True)  # after: a kill between replays it again
        self._journal_lines = 0

    def _append_journal(self, kind: str, entry: dict, shard: dict) -> None:
        assert self.root is not None
        line = {"kind": kind, "shard": shard, **{f: entry[f] for f in _LAYOUT_FIELDS}}
        with open(self.root / JOURNAL, "a", encoding="utf-8") as journal:
            journal.write(json.dumps(line) + "\n")
        self._journal_lines += 1
        listed = sum(len(e["shards"]) for e in self.manifest["kinds"].values())
        if self._journal_lines > max(64, listed // 2):  # amortised: linear total bytes
            self._save_manifest()


_LAYOUT_FIELDS = ("blocks", "source_widths", "stats")


def _add_shard(entry: dict, shard: dict) -> list[dict]:
    """Put ``shard`` into ``entry``'s row-ordered list, dropping the shards it overlaps
    (returned)."""
    overlapping = [
        s for s in entry["shards"] if s["start"] < shard["stop"] and shard["start"] < s["stop"]
    ]
    entry["shards"] = sorted(
        [s for s in entry["shards"] if s not in overlapping] + [shard], key=lambda s: s["start"]
    )
    return overlapping


def _replay_journal(manifest: dict, path: Path) -> None:
    """Apply the journal's shard lines to ``manifest`` in order (a torn or unknown line is
    skipped: its shard file, if any, is then an orphan and is recomputed)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return
    for raw in text.splitlines():
        try:
            line = json.loads(raw)
            entry = manifest["kinds"][line["kind"]]
            shard = line["shard"]
            if not 0 <= shard["start"] < shard["stop"] <= entry["n_rows"]:
                continue
        except (ValueError, KeyError, TypeError):
            continue
        for field in _LAYOUT_FIELDS:
            if entry[field] is None:
                entry[field] = line.get(field)
        _add_shard(entry, shard)


def listed_shards(root: Path | str) -> dict[str, list[dict]]:
    """Kind → its complete shards (manifest + journal) of the store at ``root``, read-only;
    empty when there is no readable manifest (e.g. to watch a running fill)."""
    try:
        manifest = read_json(Path(root) / MANIFEST)
    except (OSError, ValueError):
        return {}
    _replay_journal(manifest, Path(root) / JOURNAL)
    return {kind: entry["shards"] for kind, entry in manifest["kinds"].items()}


def _rows(payload: Mapping[str, torch.Tensor], block: str) -> torch.Tensor:
    """One block's float32 rows from a loaded shard (undoing fp16's row scale)."""
    return decode_rows(payload[block], payload.get(SCALE_PREFIX + block))


def _ours(name: str) -> bool:
    """A top-level name a store without a manifest may hold (journal, killed atomic writes)."""
    return name == JOURNAL or (name.startswith(".") and name.endswith(".tmp"))


def looks_like_store(root: Path) -> bool:
    """``root`` (an existing directory) is empty or holds a feature store (never other data)."""
    return (root / MANIFEST).exists() or all(_ours(p.name) for p in root.iterdir())


def _remove_temporaries(root: Path) -> None:
    """Delete ``.*.tmp`` files left by a killed atomic write (in ``root`` and its kind dirs)."""
    for folder in [root, *(p for p in root.iterdir() if p.is_dir() and _KIND_DIR.match(p.name))]:
        for f in folder.iterdir():
            if f.is_file() and f.name.startswith(".") and f.name.endswith(".tmp"):
                f.unlink()
