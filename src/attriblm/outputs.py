"""Output directories: checked before any work, marked as attriblm's, written by one process.

Every command that writes a directory (``attribute``, ``build``, ``finetune``, ``bench``,
``analyze``, ``demo``) checks its ``--out`` with :func:`check_output_dir` before it loads data
or a model. The path may be

- absent: it is created (its nearest existing ancestor must be a writable directory);
- an empty directory;
- an earlier output of the same command, recognised by the marker file :data:`MARKER` (for an
  ``attribute`` run: its ``run.json``) or by the files earlier versions wrote. ``finetune``,
  ``bench``, ``analyze`` and ``demo`` write into it again, as they always did; ``attribute``
  and ``build`` replace the directory as a whole, so they need ``overwrite`` (``--overwrite``).

Anything else (a file, a non-empty directory attriblm did not write, another command's output,
an unwritable parent) is an :class:`~attriblm.errors.OutputError` naming the option, the path
and the reason; nothing is deleted or replaced.

:func:`output_lock` keeps a second process off an output directory or feature store while one
writes it: an exclusive ``flock`` on ``.<name>.lock`` beside it, held for the whole command and
removed afterwards. The kernel releases the lock when its process dies, so the lock file a
killed process leaves behind (its pid dead) is simply taken over by the next run. Locks are
re-entrant within a process (the CLI takes them before loading anything, the library again).
Lock files need a local file system with ``flock`` (Linux, macOS).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path

from attriblm.errors import OutputError

MARKER = ".attriblm-output"
_RANK_STORE = re.compile(r"rank-\d+-of-\d+")
MARKER_FORMAT = "attriblm-output/1"
LOCK_SUFFIX = ".lock"


def _has(*names: str) -> Callable[[Path], bool]:
    return lambda path: any((path / name).is_file() for name in names)


def _saved_dataset(path: Path) -> bool:
    """A ``build`` output from before markers: ``dataset_dict.json`` and a ``<split>.jsonl`` for
    every split it lists (Hugging Face's ``save_to_disk`` alone writes no JSON lines)."""
    try:
        splits = json.loads((path / "dataset_dict.json").read_text(encoding="utf-8"))["splits"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return bool(splits) and all((path / f"{split}.jsonl").is_file() for split in splits)


def _finetuned(path: Path) -> bool:
    """A ``finetune`` output from before markers: ``train_log.json``, or (killed during its
    first epoch) the ``config.yaml`` it writes first, with its ``resolved: settings``."""
    if (path / "train_log.json").is_file():
        return True
    try:
        text = (path / "config.yaml").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return "\nresolved:\n" in text and "\n  settings:\n" in text


@dataclass(frozen=True)
class OutputKind:
    """One command's output directory.

    ``replaced``: built elsewhere and renamed into place, so an earlier output is replaced only
    with ``overwrite``; otherwise the command writes into it again. ``earlier`` recognises the
    kind's outputs written before :data:`MARKER` existed; ``evidence`` names them in messages.
    """

    name: str
    what: str
    replaced: bool
    earlier: Callable[[Path], bool]
    evidence: str


DIAGNOSES = ("theorem1", "ihvp_error", "convergence", "delta_theta", "subset_retrain")
RUN = OutputKind("run", "an attriblm run directory", True, _has("run.json"), "run.json")
DATASET = OutputKind(
    "dataset", "an attriblm dataset (build)", True, _saved_dataset, f"{MARKER} or dataset_dict.json"
)
FINETUNE = OutputKind("finetune", "an attriblm fine-tune directory", False, _finetuned, MARKER)
BENCH = OutputKind("bench", "an attriblm bench directory", False, _has("bench.json"), MARKER)
ANALYZE = OutputKind(
    "analyze",
    "an attriblm analyze directory",
    False,
    _has(*(f"{name}.json" for name in (*DIAGNOSES, "counterfactual"))),
    MARKER,
)
DEMO = OutputKind("demo", "an attriblm demo directory", False, _has("demo.json"), MARKER)
KINDS = {kind.name: kind for kind in (RUN, DATASET, FINETUNE, BENCH, ANALYZE, DEMO)}


def output_kind(path: Path | str) -> str | None:
    """The kind of attriblm output directory ``path`` holds (a :data:`KINDS` key), or ``None``."""
    path = Path(path)
    try:
        kind = json.loads((path / MARKER).read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        kind = None
    if isinstance(kind, str) and kind in KINDS:
        return kind
    return next((k.name for k in KINDS.values() if k.earlier(path)), None)


def _label(option: str, path: Path) -> str:
    return f"{option} {path}" if option else str(path)


def _nearest_existing(path: Path) -> Path:
    current = path.absolute()
    while not (current.exists() or current.is_symlink()) and current != current.parent:
        current = current.parent
    return current


def require_writable(directory: Path, label: str) -> None:
    """OutputError unless a file can be created in ``directory`` (probed, then removed)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".attriblm-probe-", dir=directory)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise OutputError(f"{label}: cannot write in {directory} ({reason})") from None
    os.close(fd)
    os.unlink(probe)


def _entries(path: Path, label: str) -> list[str]:
    try:
        return [entry.name for entry in path.iterdir()]
    except OSError as error:
        raise OutputError(f"{label}: cannot read the directory ({error.strerror})") from None


def check_output_dir(
    path: Path | str, kind: OutputKind, *, option: str = "--out", overwrite: bool = False
) -> Path:
    """Check that ``kind``'s command may write directory ``path`` (module doc); return it.

    Reads only (a probe file is created and removed to test writability); OutputError naming
    ``option``, the path and the reason otherwise.
    """
    path = Path(path).expanduser()
    label = _label(option, path)
    if not (path.exists() or path.is_symlink()):
        ancestor = _nearest_existing(path)
        if not ancestor.is_dir():
            raise OutputError(f"{label}: cannot be created: {ancestor} is not a directory")
        require_writable(ancestor, label)
        return path
    if not path.is_dir():
        raise OutputError(
            f"{label}: exists and is not {kind.what} (it is a file; attriblm never replaces "
            f"a file); choose another {option or 'path'}"
        )
    if _entries(path, label):
        found = output_kind(path)
        if found is None:
            raise OutputError(
                f"{label}: is a non-empty directory that attriblm did not write (no "
                f"{kind.evidence}); attriblm writes only into new, empty or its own directories, "
                f"so choose another {option or 'path'}"
            )
        if found != kind.name:
            raise OutputError(
                f"{label}: holds {KINDS[found].what}, not {kind.what}; choose another "
                f"{option or 'path'}"
            )
        if kind.replaced and not overwrite:
            raise OutputError(
                f"{label}: already holds {kind.what}; pass --overwrite to replace it, or "
                f"choose another {option or 'path'}"
            )
    # replaced kinds are staged in a sibling; the others write inside the directory
    require_writable(path.parent if kind.replaced else path, label)
    return path


def check_output_file(path: Path | str, *, option: str = "--out") -> Path:
    """A file to write (replaced atomically): not a directory, in a creatable, writable parent."""
    path = Path(path).expanduser()
    label = _label(option, path)
    if path.is_dir():
        raise OutputError(f"{label}: is a directory; give a file name")
    ancestor = _nearest_existing(path.parent)
    if not ancestor.is_dir():
        raise OutputError(f"{label}: cannot be created: {ancestor} is not a directory")
    require_writable(ancestor, label)
    return path


def write_marker(directory: Path | str, kind: OutputKind) -> None:
    """Write :data:`MARKER` into ``directory``: it is ``kind``'s attriblm output."""
    from attriblm.io import write_json

    write_json(Path(directory) / MARKER, {"format": MARKER_FORMAT, "kind": kind.name})


def claim_output_dir(
    path: Path | str, kind: OutputKind, *, option: str = "--out", overwrite: bool = False
) -> Path:
    """:func:`check_output_dir`, then create ``path`` and mark it (for commands writing inside)."""
    path = check_output_dir(path, kind, option=option, overwrite=overwrite)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"{_label(option, path)}: cannot create it ({error.strerror})") from None
    if not (path / MARKER).is_file():
        write_marker(path, kind)
    return path


def check_store_dir(path: Path | str, *, option: str = "--store") -> Path:
    """A feature store directory must be absent, empty or a feature store (has a manifest)."""
    from attriblm.features.store import MANIFEST, looks_like_store

    path = Path(path).expanduser()
    label = _label(option, path)
    if not (path.exists() or path.is_symlink()):
        ancestor = _nearest_existing(path)
        if not ancestor.is_dir():
            raise OutputError(f"{label}: cannot be created: {ancestor} is not a directory")
        require_writable(ancestor, label)
        return path
    if not path.is_dir():
        raise OutputError(f"{label}: exists and is not a feature store directory (it is a file)")
    names = _entries(path, label)
    if not (looks_like_store(path) or _rank_stores(path, names)):
        raise OutputError(
            f"{label}: exists and is not an attriblm feature store (no {MANIFEST}); "
            f"choose another {option}"
        )
    require_writable(path, label)
    return path


def _rank_stores(path: Path, names: list[str]) -> bool:
    """``path`` holds only torchrun ranks' stores (``rank-R-of-W/``) and their lock files."""
    dirs = [n for n in names if _RANK_STORE.fullmatch(n) and (path / n).is_dir()]
    locks = [
        n
        for n in names
        if n.startswith(".") and n.endswith(LOCK_SUFFIX) and _RANK_STORE.fullmatch(n[1:-5])
    ]
    return bool(dirs) and len(dirs) + len(locks) == len(names)


# ---------------------------------------------------------------- locks


@dataclass
class _Held:
    fd: int
    count: int
    created: list[Path]


_HELD: dict[str, _Held] = {}


def lock_path(target: Path | str) -> Path:
    """The lock file of an output ``target``: ``.<name>.lock`` beside it."""
    target = Path(target).expanduser().absolute()
    return target.parent / f".{target.name}{LOCK_SUFFIX}"


def _make_parents(directory: Path) -> list[Path]:
    """Create ``directory`` and missing ancestors; the ones created, deepest first."""
    missing = []
    current = directory
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        folder.mkdir(exist_ok=True)
    return missing


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _holder(fd: int) -> str:
    """`` (pid N on HOST since T: COMMAND)`` from a lock file's content, or ''."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 4096).decode("utf-8"))
        return f" (pid {info['pid']} on {info['host']} since {info['since']}: {info['command']})"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def _write_holder(fd: int) -> None:
    command = " ".join(["attriblm", *sys.argv[1:]])[:200]
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": command,
    }
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(info).encode("utf-8"))


def _acquire(target: Path, option: str) -> str:
    lock = lock_path(target)
    key = str(lock)
    held = _HELD.get(key)
    if held is not None:
        held.count += 1
        return key
    label = _label(option, Path(target))
    try:
        created = _make_parents(lock.parent)
    except OSError as error:
        raise OutputError(f"{label}: cannot create {lock.parent} ({error.strerror})") from None
    for _attempt in range(50):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as error:
            _remove_empty(created)
            raise OutputError(f"{label}: cannot create lock {lock} ({error.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            _remove_empty(created)
            raise OutputError(
                f"{label}: another attriblm process{holder} is writing it (lock {lock}); "
                f"wait for it to finish or choose another {option or 'path'}"
            ) from None
        try:  # the holder before us may have removed the file after we opened it
            current = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            _write_holder(fd)
            _HELD[key] = _Held(fd=fd, count=1, created=created)
            return key
        os.close(fd)
    _remove_empty(created)
    raise OutputError(f"{label}: could not take lock {lock}; try again")


def _release(key: str) -> None:
    held = _HELD[key]
    held.count -= 1
    if held.count:
        return
    del _HELD[key]
    with suppress(OSError):  # unlinked while still locked: no one takes a vanishing file
        os.unlink(key)
    os.close(held.fd)
    _remove_empty(held.created)


@contextmanager
def output_lock(target: Path | str, *, option: str = "--out") -> Iterator[Path]:
    """Hold the lock of output ``target`` (module doc); OutputError at once when another
    process holds it. Yields the lock file's path."""
    key = _acquire(Path(target), option)
    try:
        yield Path(key)
    finally:
        _release(key)


@contextmanager
def claimed_output(
    path: Path | str,
    kind: OutputKind,
    *,
    option: str = "--out",
    overwrite: bool = False,
    lock: bool = True,
) -> Iterator[Path]:
    """For a command: check ``path`` and (``lock``) hold its lock until the command ends.

    A directory this command created that holds nothing but :data:`MARKER` at the end (the
    command failed before writing anything) is removed again.
    """
    path = check_output_dir(path, kind, option=option, overwrite=overwrite)
    existed = path.exists()
    with output_lock(path, option=option) if lock else nullcontext(path):
        try:
            yield path
        finally:
            if not existed:
                _remove_if_only_marker(path)


def _remove_if_only_marker(path: Path) -> None:
    try:
        names = {entry.name for entry in path.iterdir()}
    except OSError:
        return
    if names <= {MARKER}:
        (path / MARKER).unlink(missing_ok=True)
        _remove_empty([path])
