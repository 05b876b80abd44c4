"""The layout of an attribution run directory, owned in one place (docs/DESIGN.md §2).

A run directory (written by ``attribute`` and ``trace``; ``bench`` caches the same shape) holds::

    run.json                       run information; "format_version": FORMAT_VERSION
    config.yaml                    resolved settings (``--config RUN/config.yaml`` repeats it)
    scores/<method>.safetensors    tensor "scores", float32 [n_query, n_train]
    factors/<method>.safetensors   K-FAC / EK-FAC factors (methods that fit them)
    topk.jsonl                     per method and query the top-k training rows
    data/train.jsonl               the training rows (score columns, in order)
    data/queries.jsonl             the queries (score rows, in order)
    generations.jsonl              ``trace`` only: every prompt, its generation, the verdict
    metrics.json                   after ``evaluate``
    *.png, */*.png                 plots

:class:`RunDir` is the only code that spells these paths; readers (``evaluate``, ``report``,
``inspect``, ``bench``) and the writer (``attribute``, whose staging directory is a RunDir
too) go through it. :data:`FORMAT_VERSION` is the layout's version: ``run.json`` records it,
a run without the key (written before it existed) reads as version 1, and a newer or unknown
version is a one-line :class:`~attriblm.errors.DataError` naming ``run.json`` and the version.
The ``.attriblm-output`` marker and locking stay in :mod:`attriblm.outputs` (a run is
recognised by its ``run.json``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from attriblm.errors import AttriblmError, DataError

FORMAT_VERSION = 1
FORMAT_KEY = "format_version"
ROLES = ("train", "queries")
GENERATIONS_FILE = "generations.jsonl"


def method_file(method: str) -> str:
    """The file name of a method's tensors in ``scores/`` and ``factors/``: ``<method>.safetensors``
    (also inside a ``--factors DIR`` copied from a run's ``factors/``)."""
    return f"{method}.safetensors"


def read_score_matrix(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Tensor ``scores`` of a score file, checked to be finite and of ``shape`` ``[n_query,
    n_train]`` (float32 as stored); DataError naming the file otherwise."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        matrix = load_file(str(path)).get("scores")
    except (OSError, SafetensorError) as error:
        reason = getattr(error, "strerror", None) or (str(error).splitlines() or ["?"])[0]
        raise DataError(f"{path}: cannot read score file ({reason})") from None
    if matrix is None or matrix.ndim != 2:
        raise DataError(f"{path}: no 2-D tensor 'scores' [n_query, n_train]")
    if tuple(matrix.shape) != tuple(shape):
        raise DataError(
            f"{path}: scores are {list(matrix.shape)} but the run has {shape[0]} queries × "
            f"{shape[1]} train rows"
        )
    bad = ~np.isfinite(matrix)
    if bad.any():
        query, train = (int(i) for i in np.argwhere(bad)[0])
        raise DataError(
            f"{path}: {int(bad.sum())} scores are NaN or infinite (first: query row {query + 1}, "
            f"train row {train + 1})"
        )
    return matrix


def count_rows(path: Path) -> int:
    """Non-blank lines of a run's ``data/*.jsonl``; DataError when the file is missing."""
    if not path.is_file():
        raise DataError(f"{path}: missing; is this an attriblm run directory?")
    try:
        with path.open(encoding="utf-8") as handle:
            return sum(1 for line in handle if line.strip())
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read ({error})") from None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a run's JSON lines file; DataError naming the file (and row) otherwise."""
    if not path.is_file():
        raise DataError(f"{path}: missing; is this an attriblm run directory?")
    rows = []
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise DataError(
                        f"{path}: row {number} is not valid JSON ({error.msg})"
                    ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read ({error})") from None
    return rows


def check_format_version(info: dict[str, Any], path: Path) -> int:
    """The run format version ``info`` (``run.json`` at ``path``) records; 1 when absent.

    DataError naming ``path`` and the version when it is not one this attriblm reads.
    """
    version = info.get(FORMAT_KEY, 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise DataError(
            f"{path}: unknown {FORMAT_KEY} {version!r} (this attriblm reads run format "
            f"1 to {FORMAT_VERSION})"
        )
    if version > FORMAT_VERSION:
        raise DataError(
            f"{path}: {FORMAT_KEY} {version} is newer than this attriblm reads (up to "
            f"{FORMAT_VERSION}); upgrade attriblm to read this run"
        )
    return version


class RunDir:
    """A run directory's paths, readers and writers (module docstring for the layout).

    Nothing is read or created on construction; a staging directory is a RunDir too.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    # ------------------------------------------------------------------ paths
    @property
    def run_json(self) -> Path:
        return self.path / "run.json"

    @property
    def config_yaml(self) -> Path:
        return self.path / "config.yaml"

    @property
    def scores_dir(self) -> Path:
        return self.path / "scores"

    def scores_file(self, method: str) -> Path:
        """``scores/<method>.safetensors`` (tensor ``scores`` ``[n_query, n_train]``)."""
        return self.scores_dir / method_file(method)

    @property
    def factors_dir(self) -> Path:
        return self.path / "factors"

    def factors_file(self, method: str) -> Path:
        """``factors/<method>.safetensors`` (a K-FAC / EK-FAC method's fitted factors)."""
        return self.factors_dir / method_file(method)

    @property
    def topk(self) -> Path:
        return self.path / "topk.jsonl"

    @property
    def data_dir(self) -> Path:
        return self.path / "data"

    def data_file(self, role: str) -> Path:
        """``data/train.jsonl`` or ``data/queries.jsonl`` (``role`` in :data:`ROLES`)."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        return self.data_dir / f"{role}.jsonl"

    @property
    def metrics_json(self) -> Path:
        return self.path / "metrics.json"

    @property
    def generations(self) -> Path:
        """``generations.jsonl`` (``trace`` runs only)."""
        return self.path / GENERATIONS_FILE

    @property
    def plots_dir(self) -> Path:
        """Where plots live: PNG files in the run directory and one folder down."""
        return self.path

    def plots(self) -> list[Path]:
        """The run's PNG plots (``*.png``, then ``*/*.png``), sorted."""
        found = sorted(self.plots_dir.glob("*.png")) + sorted(self.plots_dir.glob("*/*.png"))
        return [p for p in found if p.is_file()]

    # ------------------------------------------------------------------ reading
    def is_run(self) -> bool:
        """True when this looks like a run: ``run.json`` and ``scores/`` or ``topk.jsonl``."""
        return self.run_json.is_file() and (self.scores_dir.is_dir() or self.topk.is_file())

    def has_generations(self) -> bool:
        return self.generations.is_file()

    def read_info(self) -> dict[str, Any]:
        """``run.json`` as a dict, its format version checked (:func:`check_format_version`).

        AttriblmError when it is absent; DataError when unreadable, not an object or of a
        format this attriblm does not read.
        """
        path = self.run_json
        if not path.is_file():
            raise AttriblmError(
                f"{self.path}: not a run directory (no run.json); run `attribute` first"
            )
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise DataError(f"{path}: cannot read JSON ({error})") from None
        if not isinstance(info, dict):
            raise DataError(f"{path}: not a JSON object")
        check_format_version(info, path)
        return info

    def score_files(self) -> dict[str, Path]:
        """Every ``scores/*.safetensors`` by method name, sorted by name."""
        return {p.stem: p for p in sorted(self.scores_dir.glob("*.safetensors"))}

    def methods(self, info: dict[str, Any] | None = None) -> list[str]:
        """Methods with a score file: in ``run.json`` order, then unlisted ones by name."""
        listed = (info if info is not None else self.read_info()).get("methods") or {}
        files = self.score_files()
        return [m for m in listed if m in files] + sorted(set(files) - set(listed))

    def shape(self, info: dict[str, Any] | None = None) -> tuple[int, int]:
        """``(n_query, n_train)`` from ``run.json``, else counted in ``data/``."""
        info = info if info is not None else self.read_info()
        n_query, n_train = info.get("n_query"), info.get("n_train")
        if not isinstance(n_query, int):
            n_query = count_rows(self.data_file("queries"))
        if not isinstance(n_train, int):
            n_train = count_rows(self.data_file("train"))
        return n_query, n_train

    def load_scores(self, method: str, shape: tuple[int, int] | None = None) -> np.ndarray:
        """``scores/<method>.safetensors`` as float32 ``[n_query, n_train]`` (larger = more
        supportive), checked to be finite and of ``shape`` (default :meth:`shape`)."""
        path = self.scores_file(method)
        if not path.is_file():
            raise DataError(f"{path}: missing; run `attribute` with --method {method}")
        return read_score_matrix(path, shape if shape is not None else self.shape())

    def read_data(self, role: str) -> list[dict[str, Any]]:
        """The rows of ``data/<role>.jsonl`` (``{"prompt", "response", "label"}`` each)."""
        return read_jsonl(self.data_file(role))

    def read_topk(self) -> list[dict[str, Any]]:
        """The rows of ``topk.jsonl`` (``{"method", "query", "top": [...]}`` each)."""
        return read_jsonl(self.topk)

    def read_generations(self) -> list[dict[str, Any]]:
        """The rows of ``generations.jsonl``: ``{"index", "prompt", "generation", "kept",
        "query"}`` (``query``: 0-based row of the kept pair in the scores, ``None`` if not
        kept); DataError naming the file and row when one is malformed."""
        rows = read_jsonl(self.generations)
        for number, row in enumerate(rows, start=1):
            if not isinstance(row, dict) or not {"prompt", "generation", "kept"} <= set(row):
                raise DataError(
                    f"{self.generations}: row {number}: expected an object with 'prompt', "
                    "'generation' and 'kept'"
                )
        return rows

    def config_text(self) -> str:
        """``config.yaml`` as text (``""`` when absent)."""
        return self.config_yaml.read_text(encoding="utf-8") if self.config_yaml.is_file() else ""

    # ------------------------------------------------------------------ writing
    def create(self) -> RunDir:
        """Create the directory with ``scores/`` and ``data/`` (for a staging directory)."""
        self.scores_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(exist_ok=True)
        return self

    def write_scores(self, method: str, matrix: Any) -> Path:
        """Save ``matrix`` ``[n_query, n_train]`` (a torch tensor) as tensor ``scores``."""
        from attriblm.io import save_tensors

        return save_tensors(self.scores_file(method), {"scores": matrix})

    def write_info(self, info: dict[str, Any]) -> dict[str, Any]:
        """Write ``run.json``: ``info`` with ``format_version`` first; returns what was written."""
        from attriblm.io import write_json

        written = {FORMAT_KEY: FORMAT_VERSION, **{k: v for k, v in info.items() if k != FORMAT_KEY}}
        write_json(self.run_json, written)
        return written

    def write_config(self, config: dict[str, Any]) -> Path:
        from attriblm.io import write_yaml

        return write_yaml(self.config_yaml, config)

    def write_topk(self, rows: Iterable[dict]) -> Path:
        from attriblm.io import write_jsonl

        return write_jsonl(self.topk, rows)

    def write_data(self, role: str, rows: Iterable[dict]) -> Path:
        from attriblm.io import write_jsonl

        return write_jsonl(self.data_file(role), rows)

    def write_generations(self, rows: Iterable[dict]) -> Path:
        from attriblm.io import write_jsonl

        return write_jsonl(self.generations, rows)

    def write_metrics(self, report: dict[str, Any]) -> Path:
        from attriblm.io import write_json

        return write_json(self.metrics_json, report)
