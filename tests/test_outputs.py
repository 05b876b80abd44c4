"""Output directories (attriblm.outputs): checked before any work, marked, locked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from attriblm import outputs
from attriblm.errors import OutputError
from attriblm.outputs import (
    ANALYZE,
    DATASET,
    FINETUNE,
    MARKER,
    RUN,
    check_output_dir,
    check_output_file,
    check_store_dir,
    claim_output_dir,
    claimed_output,
    lock_path,
    output_kind,
    output_lock,
)

SRC = Path(__file__).resolve().parents[1] / "src"


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (``None`` for directories)."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def unwritable_dir(tmp_path: Path) -> Path:
    """A directory this process cannot create files in (chmod, or /sys when running as root)."""
    locked = tmp_path / "read-only"
    locked.mkdir()
    locked.chmod(0o500)
    candidates = [locked, Path("/sys")]
    for candidate in candidates:
        try:
            fd, probe = tempfile.mkstemp(dir=candidate)
        except OSError:
            return candidate
        os.close(fd)
        os.unlink(probe)
    pytest.skip("no unwritable directory available (root without a read-only /sys)")


def test_absent_and_empty_directories_are_accepted(tmp_path):
    assert check_output_dir(tmp_path / "new" / "run", RUN) == tmp_path / "new" / "run"
    (tmp_path / "empty").mkdir()
    assert check_output_dir(tmp_path / "empty", RUN) == tmp_path / "empty"
    assert not (tmp_path / "new").exists()  # checking creates nothing


@pytest.mark.parametrize("kind", [RUN, DATASET, FINETUNE, ANALYZE], ids=lambda k: k.name)
def test_a_file_is_refused_and_left_alone(tmp_path, kind):
    target = tmp_path / "X"
    target.write_text("precious")
    with pytest.raises(OutputError, match=r"--out .*X: exists and is not an attriblm"):
        check_output_dir(target, kind, overwrite=True)
    assert target.read_text() == "precious"


def test_a_path_under_a_file_is_refused():
    with pytest.raises(OutputError, match=r"/dev/null/run: cannot be created: /dev/null is not"):
        check_output_dir("/dev/null/run", RUN)


@pytest.mark.parametrize("kind", [RUN, DATASET, FINETUNE, ANALYZE], ids=lambda k: k.name)
def test_a_foreign_non_empty_directory_is_refused_even_with_overwrite(tmp_path, kind):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "config.yaml").write_text("not attriblm's")
    before = snapshot(tmp_path)
    with pytest.raises(OutputError, match="non-empty directory that attriblm did not write"):
        check_output_dir(tmp_path / "mine", kind, overwrite=True)
    with pytest.raises(OutputError):
        claim_output_dir(tmp_path / "mine", kind)
    assert snapshot(tmp_path) == before


def test_an_earlier_run_needs_overwrite(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text("{}")
    with pytest.raises(OutputError, match="already holds an attriblm run directory.*--overwrite"):
        check_output_dir(run, RUN)
    assert check_output_dir(run, RUN, overwrite=True) == run


def test_another_commands_output_is_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text("{}")
    with pytest.raises(OutputError, match="holds an attriblm run directory, not an attriblm fine"):
        check_output_dir(run, FINETUNE)


def test_commands_that_write_inside_reuse_their_own_directory(tmp_path):
    out = claim_output_dir(tmp_path / "ft", FINETUNE)
    assert json.loads((out / MARKER).read_text())["kind"] == "finetune"
    (out / "train_log.json").write_text("{}")
    assert claim_output_dir(out, FINETUNE) == out  # no --overwrite needed: as before


@pytest.mark.parametrize(
    "files,kind",
    [
        ({"run.json": "{}"}, "run"),
        ({"train_log.json": "{}"}, "finetune"),
        ({"config.yaml": "out: x\nresolved:\n  settings:\n    epochs: 1\n"}, "finetune"),
        ({"bench.json": "{}"}, "bench"),
        ({"theorem1.json": "{}"}, "analyze"),
        ({"demo.json": "{}"}, "demo"),
        ({"dataset_dict.json": '{"splits": ["train"]}', "train.jsonl": ""}, "dataset"),
        ({"dataset_dict.json": '{"splits": ["train"]}'}, None),  # a plain save_to_disk
        ({"config.yaml": "epochs: 3\n"}, None),
        ({MARKER: "not json"}, None),
    ],
)
def test_outputs_of_earlier_versions_are_recognised(tmp_path, files, kind):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert output_kind(tmp_path) == kind


def test_an_unwritable_parent_is_refused(tmp_path):
    parent = unwritable_dir(tmp_path)
    with pytest.raises(OutputError, match="cannot write in"):
        check_output_dir(parent / "run", RUN)
    with pytest.raises(OutputError, match="cannot write in"):
        check_store_dir(parent / "run.store")
    with pytest.raises(OutputError, match="cannot write in"):
        check_output_file(parent / "report.html")


def test_store_directories(tmp_path):
    assert check_store_dir(tmp_path / "s") == tmp_path / "s"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.csv").write_text("a,b\n")
    (foreign / ".x.tmp").write_text("keep")
    with pytest.raises(OutputError, match="not an attriblm feature store"):
        check_store_dir(foreign)
    store = tmp_path / "store"
    store.mkdir()
    (store / "manifest.json").write_text("{}")
    assert check_store_dir(store) == store


def test_report_file_may_not_be_a_directory(tmp_path):
    with pytest.raises(OutputError, match="is a directory"):
        check_output_file(tmp_path)
    assert check_output_file(tmp_path / "r.html") == tmp_path / "r.html"


def test_lock_is_reentrant_and_removed_after(tmp_path):
    target = tmp_path / "deep" / "run"
    with output_lock(target) as lock:
        assert lock == lock_path(target) and lock.is_file()
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        with output_lock(target):  # the CLI and the library both take it
            pass
        assert lock.is_file()
    assert not lock.exists()
    assert not (tmp_path / "deep").exists()  # the parent it created, empty again


HOLDER = """
import sys, time
from pathlib import Path
from attriblm.outputs import output_lock
with output_lock(sys.argv[1]):
    Path(sys.argv[2]).write_text("held")
    time.sleep(60)
"""


@pytest.fixture
def held_lock(tmp_path):
    """Another process holding the lock of ``tmp_path / 'run'``: ``(target, pid)``."""
    target, ready = tmp_path / "run", tmp_path / "ready"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(target), str(ready)], env=env)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert holder.poll() is None, "the lock holder exited"
            assert time.monotonic() < deadline, "the lock holder did not start"
            time.sleep(0.05)
        yield target, holder.pid
    finally:
        holder.kill()
        holder.wait()


def test_a_second_process_is_refused_at_once_naming_the_holder(held_lock):
    target, pid = held_lock
    started = time.monotonic()
    expected = rf"another attriblm process \(pid {pid} .*is writing"
    with pytest.raises(OutputError, match=expected), output_lock(target):
        pass
    assert time.monotonic() - started < 5  # no waiting
    assert lock_path(target).is_file()  # the holder's lock is left alone


def test_a_killed_holders_lock_is_taken_over(held_lock):
    target, pid = held_lock
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    assert lock_path(target).is_file()  # left behind by the dead process
    with output_lock(target) as lock:
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()


def test_a_stale_lock_file_with_a_dead_pid_is_taken_over(tmp_path):
    target = tmp_path / "run"
    stale = {"pid": 2**22 + 12345, "host": "x", "since": "then", "command": "attriblm attribute"}
    lock_path(target).write_text(json.dumps(stale))
    with output_lock(target) as lock:
        assert json.loads(lock.read_text())["pid"] == os.getpid()


def test_claimed_output_removes_a_directory_left_with_only_its_marker(tmp_path):
    out = tmp_path / "ft"
    with pytest.raises(RuntimeError), claimed_output(out, FINETUNE):
        claim_output_dir(out, FINETUNE)  # the library creates and marks it ...
        raise RuntimeError("... then fails before writing anything")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    with claimed_output(out, FINETUNE):
        claim_output_dir(out, FINETUNE)
        (out / "train_log.json").write_text("{}")
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "train_log.json"]


def test_lock_file_lives_beside_the_output(tmp_path):
    assert lock_path(tmp_path / "run") == tmp_path / ".run.lock"
    assert lock_path(tmp_path / "run.store") == tmp_path / ".run.store.lock"
    assert outputs.LOCK_SUFFIX == ".lock"


def test_a_torchrun_store_holding_rank_stores_is_accepted(tmp_path):
    store = tmp_path / "run.store"
    (store / "rank-0-of-2").mkdir(parents=True)
    (store / "rank-1-of-2").mkdir()
    (store / ".rank-1-of-2.lock").write_text("")
    assert check_store_dir(store) == store
    (store / "notes.txt").write_text("someone else's")
    with pytest.raises(OutputError, match="not an attriblm feature store"):
        check_store_dir(store)
