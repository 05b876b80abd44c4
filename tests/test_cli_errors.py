"""The error boundary of every command (``attriblm.cli.main``, issue 16).

Every subcommand is driven with bad inputs: each must give exit code 2, one line
``attriblm: error: ...`` naming the file / option at fault, no traceback, and leave the world
exactly as it was (no output directory, no ``.store``, no lock file, no replaced or deleted
input). An internal bug is exit code 1 with a hint to rerun with ``--debug``. Runs ``main``
in-process on the tiny model; nothing here loads the real model.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from attriblm.cli import main
from attriblm.data.loaders import load_examples
from attriblm.data.schema import Example
from attriblm.data.writers import write_dataset
from attriblm.models.loading import load_model
from attriblm.models.lora import LoraSettings, add_lora, lora_linears
from attriblm.models.tiny import build_tiny_model
from attriblm.pipeline.attribute import AttributeSettings, attribute

SRC = Path(__file__).resolve().parents[1] / "src"
ROWS = [
    {"prompts": f"Say {word}", "response": word, "variation": label}
    for word, label in [("hi", "a"), ("yo", "b"), ("ho", "a"), ("ya", "b")]
]


def cli(monkeypatch, capsys, *args: object) -> tuple[int, str, str]:
    """``attriblm ARGS`` in-process: ``(exit code, stdout, stderr)``."""
    monkeypatch.setattr(sys, "argv", ["attriblm", *map(str, args)])
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main()
    captured = capsys.readouterr()
    return int(info.value.code or 0), captured.out, captured.err


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` (hidden ones too) with its bytes (``None`` for directories)."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """Inputs every case may point at: data, adapters, a finished run and damaged copies."""
    root = tmp_path_factory.mktemp("world")
    data = write_jsonl(root / "data.jsonl", ROWS)
    (root / "surrogate.jsonl").write_text(
        json.dumps(ROWS[0]) + '\n{"prompts": "Say \\ud800", "response": "x", "variation": "a"}\n',
        encoding="utf-8",
    )
    model, _ = build_tiny_model(seed=0)
    wrapped = add_lora(model, LoraSettings(), seed=1)
    with torch.no_grad():
        for name, linear in lora_linears(wrapped):
            if name.endswith("lora_B"):
                linear.weight.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(2))
    wrapped.save_pretrained(root / "adapter", save_embedding_layers=False)
    pickled = root / "pickled-adapter"
    shutil.copytree(root / "adapter", pickled)
    from safetensors.torch import load_file

    torch.save(load_file(pickled / "adapter_model.safetensors"), pickled / "adapter_model.bin")
    (pickled / "adapter_model.safetensors").unlink()
    examples = load_examples(str(data))
    attribute(
        load_model("tiny", adapter=root / "adapter"),
        examples,
        examples,
        AttributeSettings(methods=["gradsim", "datainf"]),
        root / "run",
    )
    for name in ("deleted", "garbage", "shape", "nan", "config", "future"):
        shutil.copytree(root / "run", root / f"run-{name}")
    future = json.loads((root / "run-future" / "run.json").read_text(encoding="utf-8"))
    future["format_version"] = 99  # written by a newer attriblm
    (root / "run-future" / "run.json").write_text(json.dumps(future), encoding="utf-8")
    (root / "run-deleted" / "scores" / "datainf.safetensors").unlink()
    (root / "run-garbage" / "scores" / "datainf.safetensors").write_bytes(os.urandom(64))
    shape = np.zeros((len(ROWS) + 1, len(ROWS)), np.float32)
    save_file({"scores": shape}, str(root / "run-shape" / "scores" / "gradsim.safetensors"))
    nan = np.zeros((len(ROWS), len(ROWS)), np.float32)
    nan[0, 1] = np.nan
    save_file({"scores": nan}, str(root / "run-nan" / "scores" / "gradsim.safetensors"))
    (root / "run-config" / "config.yaml").write_text("train: [unclosed\n", encoding="utf-8")
    (root / "bad-finetune" / "checkpoints").mkdir(parents=True)
    (root / "bad-finetune" / "train_log.json").write_text("{truncated", encoding="utf-8")
    write_dataset({"train": [Example("p", "r")]}, root / "dataset")
    (root / "file").write_text("not a directory", encoding="utf-8")
    (root / "foreign").mkdir()
    (root / "foreign" / "notes.txt").write_text("someone else's", encoding="utf-8")
    (root / "foreign" / ".cache.tmp").write_text("also someone else's", encoding="utf-8")
    return root


@pytest.fixture
def world(template, tmp_path) -> Path:
    world = tmp_path / "world"
    shutil.copytree(template, world)
    return world


FT = "finetune --model tiny --train {w}/data.jsonl"
ATTR = "attribute --model tiny --adapter {w}/adapter --train {w}/data.jsonl"
ATTR += " --queries {w}/data.jsonl -m gradsim -q"
TRACE = "trace --model tiny --adapter {w}/adapter --train {w}/data.jsonl -m gradsim -q"
TRACE += " --prompt hello"
DATA = "--model tiny --train {w}/data.jsonl --queries {w}/data.jsonl"
SWEEP = "analyze layer-sweep --adapter {w}/adapter " + DATA
IHVP, CONV = "analyze ihvp-error " + DATA, "analyze convergence " + DATA
SUBSET, CF = "analyze subset-retrain " + DATA, "analyze counterfactual " + DATA
NOT_ATTRIBLMS, EXISTS = "did not write", "exists and is not"


def _with(old: str, new: str) -> str:
    return ATTR.replace(old, new) + " --out {w}/new"


# (case id, command line with {w} = the world directory, what the one-line error must name)
CASES = [
    # finetune
    ("finetune-out-file", FT + " --out {w}/file", EXISTS),
    ("finetune-out-foreign", FT + " --out {w}/foreign", NOT_ATTRIBLMS),
    ("finetune-out-run", FT + " --out {w}/run", "run directory, not"),
    ("finetune-out-dev-null", FT + " --out /dev/null/ft", "/dev/null is not"),
    ("finetune-batch-size-0", FT + " --out {w}/new --batch-size 0", "--batch-size"),
    ("finetune-epochs-0", FT + " --out {w}/new --epochs 0", "--epochs"),
    ("finetune-lr-0", FT + " --out {w}/new --lr 0", "--lr"),
    ("finetune-missing-train", FT.replace("data.jsonl", "nope.jsonl") + " --out {w}/new", "nope"),
    ("finetune-surrogate", FT.replace("data", "surrogate") + " --out {w}/new", "line 2"),
    # attribute
    ("attribute-out-file", ATTR + " --out {w}/file", "exists and is not an attriblm run"),
    ("attribute-out-dev-null", ATTR + " --out /dev/null/run", "/dev/null/run"),
    ("attribute-out-foreign", ATTR + " --out {w}/foreign --overwrite", NOT_ATTRIBLMS),
    ("attribute-out-run", ATTR + " --out {w}/run", "--overwrite"),
    ("attribute-out-dataset", ATTR + " --out {w}/dataset --overwrite", "dataset"),
    ("attribute-store-foreign", ATTR + " --out {w}/new --store {w}/foreign", "--store"),
    ("attribute-store-file", ATTR + " --out {w}/new --store {w}/file", "--store"),
    ("attribute-batch-size-0", ATTR + " --out {w}/new --batch-size 0", "--batch-size"),
    ("attribute-topk-negative", ATTR + " --out {w}/new --topk -1", "--topk"),
    ("attribute-max-length-1", ATTR + " --out {w}/new --max-length 1", "--max-length"),
    ("attribute-damping-negative", ATTR + " --out {w}/new --damping -1", "--damping"),
    ("attribute-pooling", ATTR + " --out {w}/new --repsim-pooling max", "--repsim-pooling"),
    ("attribute-proj-dim-0", ATTR + " --out {w}/new --proj-dim 0", "--proj-dim"),
    ("attribute-store-dtype", ATTR + " --out {w}/new --store-dtype int8", "--store-dtype"),
    ("attribute-template", ATTR + " --out {w}/new --template chatml", "--template"),
    ("attribute-unknown-method", ATTR + " -m nope --out {w}/new", "nope"),
    ("attribute-option-unknown-key", ATTR + " --out {w}/new --option gradsim.scale=2", "--option"),
    ("attribute-option-not-run", ATTR + " --out {w}/new --option lissa.tol=0.1", "not being run"),
    ("attribute-option-malformed", ATTR + " --out {w}/new --option lissa", "METHOD.KEY=VALUE"),
    ("attribute-missing-queries", _with("queries {w}/data", "queries {w}/none"), "none.jsonl"),
    (
        "attribute-surrogate",
        _with("train {w}/data", "train {w}/surrogate"),
        "surrogate.jsonl: line 2",
    ),
    ("attribute-pickled-adapter", _with("{w}/adapter", "{w}/pickled-adapter"), "--allow-pickle"),
    ("attribute-missing-adapter", _with("{w}/adapter", "{w}/none"), "none"),
    (
        "attribute-garbage-train-log",
        _with("gradsim", "tracin --checkpoints {w}/bad-finetune"),
        "train_log.json: not valid JSON",
    ),
    # trace
    ("trace-out-file", TRACE + " --out {w}/file", "exists and is not an attriblm run"),
    ("trace-out-dev-null", TRACE + " --out /dev/null/run", "/dev/null/run"),
    ("trace-out-run", TRACE + " --out {w}/run", "--overwrite"),
    ("trace-bad-detector", TRACE + " --out {w}/new --detect nope:x", "--detect"),
    ("trace-no-prompts", TRACE.replace(" --prompt hello", "") + " --out {w}/new", "prompts"),
    ("trace-batch-size-0", TRACE + " --out {w}/new --batch-size 0", "--batch-size"),
    # evaluate
    ("evaluate-deleted-score-file", "evaluate --run {w}/run-deleted", "datainf.safetensors: miss"),
    ("evaluate-garbage-score-file", "evaluate --run {w}/run-garbage", "datainf.safetensors: can"),
    ("evaluate-wrong-shape", "evaluate --run {w}/run-shape", "scores are [5, 4]"),
    ("evaluate-nan-scores", "evaluate --run {w}/run-nan", "NaN or infinite"),
    ("evaluate-not-a-run", "evaluate --run {w}/foreign", "not a run directory"),
    ("evaluate-garbage-config", "evaluate --run {w}/run-config", "config.yaml: not valid YAML"),
    ("evaluate-k-0", "evaluate --run {w}/run --k 0", "--k"),
    ("evaluate-newer-format", "evaluate --run {w}/run-future", "format_version 99 is newer"),
    # build
    ("build-unknown-task", "build nope --out {w}/new", "nope"),
    ("build-unknown-preset", "build grammars --preset huge --out {w}/new", "huge"),
    ("build-out-file", "build grammars --preset demo --out {w}/file", EXISTS),
    (
        "build-out-foreign",
        "build grammars --preset demo --out {w}/foreign --overwrite",
        NOT_ATTRIBLMS,
    ),
    ("build-out-dataset", "build grammars --preset demo --out {w}/dataset", "--overwrite"),
    # methods
    ("methods-missing-config", "methods --config {w}/nope.yaml", "nope.yaml"),
    # demo
    ("demo-out-file", "demo --model tiny --out {w}/file", EXISTS),
    ("demo-out-foreign", "demo --model tiny --out {w}/foreign", NOT_ATTRIBLMS),
    ("demo-missing-model", "demo --model {w}/no-model --out {w}/new", "no-model"),
    # bench
    ("bench-out-file", "bench --model tiny --out {w}/file", EXISTS),
    ("bench-out-foreign", "bench --model tiny --out {w}/foreign", NOT_ATTRIBLMS),
    ("bench-unknown-task", "bench --model tiny --tasks nope --out {w}/new", "nope"),
    ("bench-unknown-preset", "bench --model tiny --preset huge --out {w}/new", "huge"),
    # report
    ("report-missing-dir", "report {w}/none --out {w}/r.html", "none"),
    ("report-out-is-a-directory", "report {w}/run --out {w}/foreign", "is a directory"),
    ("report-garbage-score-file", "report {w}/run-garbage --out {w}/r.html", "cannot read"),
    ("report-deleted-score-file", "report {w}/run-deleted --out {w}/r.html", "missing"),
    ("report-newer-format", "report {w}/run-future --out {w}/r.html", "run.json: format_version"),
    # inspect
    ("inspect-query-0", "inspect {w}/run --query 0", "--query"),
    ("inspect-unknown-method", "inspect {w}/run --method lissa", "lissa"),
    ("inspect-nan-scores", "inspect {w}/run-nan", "NaN"),
    ("inspect-not-a-run", "inspect {w}/foreign", "not an attriblm run"),
    ("inspect-newer-format", "inspect {w}/run-future", "format_version 99 is newer"),
    # analyze
    ("theorem1-dims", "analyze theorem1 --dims abc --out {w}/new", "--dims"),
    ("theorem1-out-file", "analyze theorem1 --out {w}/file", EXISTS),
    ("theorem1-out-foreign", "analyze theorem1 --out {w}/foreign", NOT_ATTRIBLMS),
    ("theorem1-out-run", "analyze theorem1 --out {w}/run", "run directory, not"),
    ("layer-sweep-out-foreign", SWEEP + " --out {w}/foreign", NOT_ATTRIBLMS),
    ("layer-sweep-batch-size-0", SWEEP + " --out {w}/new --batch-size 0", "--batch-size"),
    ("layer-sweep-bad-layer", SWEEP + " --out {w}/new --layers 99", "99"),
    ("ihvp-error-batch-size-0", IHVP + " --out {w}/new --batch-size 0", "--batch-size"),
    ("ihvp-error-out-foreign", IHVP + " --out {w}/foreign", NOT_ATTRIBLMS),
    ("ihvp-error-option-bad-key", IHVP + " --out {w}/new --option lissa.bogus=1", "lissa.bogus"),
    ("convergence-out-file", CONV + " --finetune {w}/run --out {w}/file", EXISTS),
    ("delta-theta-vary", "analyze delta-theta --model tiny --vary nope --out {w}/new", "nope"),
    ("delta-theta-out-file", "analyze delta-theta --model tiny --out {w}/file", EXISTS),
    ("subset-retrain-k-0", SUBSET + " --k 0 --out {w}/new", "--k"),
    ("subset-retrain-out-foreign", SUBSET + " --out {w}/foreign", NOT_ATTRIBLMS),
    ("counterfactual-n-subsets", CF + " --n-subsets 1 --out {w}/new", "subsets"),
    ("counterfactual-out-file", CF + " --out {w}/file", EXISTS),
]


def test_every_subcommand_is_covered():
    from attriblm.analysis.commands import analyze_app
    from attriblm.cli import app

    commands = {c.name or c.callback.__name__ for c in app.registered_commands}
    analyses = {c.name or c.callback.__name__ for c in analyze_app.registered_commands}
    driven = {case.split()[0] for _id, case, _needle in CASES}
    driven |= {case.split()[1] for _id, case, _needle in CASES if case.startswith("analyze ")}
    assert commands <= driven, commands - driven
    assert analyses <= driven, analyses - driven


@pytest.mark.parametrize(("command", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_touches_nothing(
    monkeypatch, capsys, world, command, needle
):
    parent = world.parent
    before = snapshot(parent)
    code, _out, err = cli(monkeypatch, capsys, *command.format(w=world).split())
    assert "Traceback" not in err, err
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("attriblm: error: ")]
    assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err
    assert needle in errors[0], errors[0]
    assert snapshot(parent) == before  # nothing written, replaced or deleted; no .store, no lock


def test_the_positive_controls_succeed(monkeypatch, capsys, world):
    """The same inputs, made valid, work: evaluate a good run, replace it with --overwrite."""
    code, _out, err = cli(monkeypatch, capsys, "evaluate", "--run", world / "run")
    assert code == 0, err
    metrics = json.loads((world / "run" / "metrics.json").read_text())
    assert list(metrics["methods"]) == ["gradsim", "datainf"]
    args = ATTR.format(w=world).split() + ["--out", str(world / "run"), "--overwrite"]
    code, _out, err = cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert not (world / "run" / "metrics.json").exists()  # a new run replaced the old one
    assert sorted(p.name for p in world.iterdir() if p.name.startswith(".")) == []
    pickled = [*args, "--adapter", str(world / "pickled-adapter")]  # the last --adapter wins
    code, _out, err = cli(monkeypatch, capsys, "--allow-pickle", *pickled)
    assert code == 0, err
    from attriblm.models import loading

    assert loading._ALLOW_PICKLE is False  # the flag lasts one command


HOLDER = """
import sys, time
from pathlib import Path
from attriblm.outputs import output_lock
with output_lock(sys.argv[1]):
    Path(sys.argv[2]).write_text("held")
    time.sleep(60)
"""


def test_a_second_attribute_on_the_same_out_refuses_at_once(monkeypatch, capsys, world):
    """Two runs at once with one --out: the second stops before any work, the first's store
    (here a stand-in with a shard) is left alone."""
    out, ready = world / "busy", world.parent / "ready"
    store = world / "busy.store"
    store.mkdir()
    (store / "manifest.json").write_text("{}")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out), str(ready)], env=env)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert holder.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        before = snapshot(world)
        started = time.monotonic()
        code, _out, err = cli(monkeypatch, capsys, *ATTR.format(w=world).split(), "--out", out)
        assert time.monotonic() - started < 30
    finally:
        holder.kill()
        holder.wait()
    assert code == 2, err
    assert f"another attriblm process (pid {holder.pid}" in err and str(out) in err
    assert snapshot(world) == before


def test_an_internal_error_is_exit_1_with_a_hint(monkeypatch, capsys):
    def broken():
        raise ZeroDivisionError("division by zero somewhere deep")

    monkeypatch.setattr("attriblm.methods.registry.available_methods", broken)
    monkeypatch.delenv("ATTRIBLM_DEBUG", raising=False)
    code, _out, err = cli(monkeypatch, capsys, "methods")
    assert code == 1
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "internal error: ZeroDivisionError" in lines[0]
    assert "--debug" in lines[0]


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback_with_the_same_exit_codes(monkeypatch, capsys, tmp_path, how):
    def broken():
        raise ZeroDivisionError("deep")

    monkeypatch.setattr("attriblm.methods.registry.available_methods", broken)
    flag = ["--debug"] if how == "flag" else []
    if how == "env":
        monkeypatch.setenv("ATTRIBLM_DEBUG", "1")
    code, _out, err = cli(monkeypatch, capsys, *flag, "methods")
    assert code == 1 and "Traceback" in err and "ZeroDivisionError: deep" in err
    code, _out, err = cli(monkeypatch, capsys, *flag, "evaluate", "--run", tmp_path / "none")
    assert code == 2 and "Traceback" in err
    assert err.strip().splitlines()[-1].startswith("attriblm: error: ")


@pytest.mark.parametrize(
    ("error", "needle"),
    [
        (OSError(errno.ENOSPC, "No space left on device", "/data/run.store/x"), "free some disk"),
        (OSError(errno.EROFS, "Read-only file system", "/ro/run"), "/ro/run: Read-only"),
        (PermissionError(errno.EACCES, "Permission denied", "/root/x"), "/root/x"),
        (MemoryError(), "out of memory"),
    ],
    ids=["disk-full", "read-only", "permission", "memory"],
)
def test_environment_failures_are_user_errors(monkeypatch, capsys, tmp_path, error, needle):
    def failing(*_args, **_kwargs):
        raise error

    monkeypatch.setattr("attriblm.data.tasks.build_task", failing)
    code, _out, err = cli(monkeypatch, capsys, "build", "grammars", "--out", tmp_path / "ds")
    assert code == 2 and "Traceback" not in err
    assert needle in err.strip().splitlines()[-1]
    assert list(tmp_path.iterdir()) == []
