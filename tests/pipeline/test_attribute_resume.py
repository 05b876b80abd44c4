"""A killed or interrupted `attribute` resumes from its feature store to bit-identical scores."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from attriblm.data.loaders import load_examples
from attriblm.errors import ConfigError
from attriblm.features.store import listed_shards
from attriblm.io import load_tensors, read_json
from attriblm.models.loading import load_model
from attriblm.pipeline.attribute import AttributeSettings, attribute, default_store_dir
from attriblm.train.finetune import TrainSettings, finetune

# gradients + K-FAC sums (ekfac), per-checkpoint gradients (tracin), representations (repsim)
METHODS = ["gradsim", "datainf", "ekfac", "tracin", "repsim"]


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory, samples_dir) -> Path:
    """A two-epoch tiny fine-tune: tracin's first checkpoint differs from the final adapter."""
    out = tmp_path_factory.mktemp("resume-finetune")
    train = load_examples(f"{samples_dir / 'grammars_small'}:train")
    settings = TrainSettings(epochs=2, lr=1e-3, batch_size=16)
    return finetune(load_model("tiny"), train, settings, out).adapter_dir


@pytest.fixture(scope="module")
def data(samples_dir):
    spec = str(samples_dir / "grammars_small")
    return load_examples(f"{spec}:train"), load_examples(f"{spec}:test")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, two_epochs, data):
    """An uninterrupted run (batch size 8: 10 train batches, 3 query batches)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    run = attribute(
        load_model("tiny", adapter=two_epochs),
        *data,
        AttributeSettings(methods=METHODS, batch_size=8),
        out,
    )
    assert not default_store_dir(out).exists()  # removed after success
    return run


def _interrupting(prefix: str, after: int):
    """A progress factory whose bars for ``prefix…`` raise KeyboardInterrupt at call ``after``."""
    calls = {"n": 0}

    def make(description: str, _total: int):
        def advance(_n: int) -> None:
            if description.startswith(prefix):
                calls["n"] += 1
                if calls["n"] == after:
                    raise KeyboardInterrupt

        return advance

    return make


def test_interrupted_runs_resume_to_identical_scores(tmp_path, two_epochs, data, reference):
    out = tmp_path / "run"
    settings = AttributeSettings(methods=METHODS, batch_size=8)
    store = default_store_dir(out)
    # 1st run: stopped after 3 train gradient batches (their gradients and K-FAC sums stored)
    with pytest.raises(KeyboardInterrupt):
        attribute(
            load_model("tiny", adapter=two_epochs),
            *data,
            settings,
            out,
            progress=_interrupting("gradients", 3),
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.store"]  # no run dir, no .partial
    shards = listed_shards(store)  # manifest + journal: the interrupted fill never compacted
    assert len(shards["grads:train"]) == len(shards["kfac:train"]) == 3
    # 2nd run: resumes the gradients, then stops after 2 batches of checkpoint gradients
    with pytest.raises(KeyboardInterrupt):
        attribute(
            load_model("tiny", adapter=two_epochs),
            *data,
            settings,
            out,
            progress=_interrupting("checkpoint", 2),
        )
    assert not out.exists()
    # 3rd run: completes, computing only what the store lacks
    run = attribute(load_model("tiny", adapter=two_epochs), *data, settings, out)
    rows = run.info["store"]["rows"]
    assert rows["grads:train"] == rows["kfac:train"] == {"reused": 80, "computed": 0}
    assert rows["ckpt-0:train"] == {"reused": 16, "computed": 64}
    assert rows["reprs:train"] == {"reused": 0, "computed": 80}
    assert sorted(run.scores) == sorted(METHODS)
    for name, expected in reference.scores.items():
        assert torch.equal(run.scores[name], expected), name
        saved = load_tensors(out / "scores" / f"{name}.safetensors")["scores"]
        assert torch.equal(saved, expected), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # store removed after success


def test_an_explicit_store_is_kept_and_reused_whole(tmp_path, two_epochs, data, reference):
    store = tmp_path / "features"
    settings = AttributeSettings(methods=["gradsim", "repsim"], batch_size=8, store=str(store))
    loaded = load_model("tiny", adapter=two_epochs)
    first = attribute(loaded, *data, settings, tmp_path / "a")
    assert (store / "manifest.json").is_file()
    again = attribute(loaded, *data, settings, tmp_path / "b")
    assert all(r["computed"] == 0 for r in again.info["store"]["rows"].values())
    for name in ("gradsim", "repsim"):
        assert torch.equal(first.scores[name], reference.scores[name])
        assert torch.equal(again.scores[name], reference.scores[name])


def test_half_storage_and_projection_change_scores_little(tmp_path, two_epochs, data, reference):
    loaded = load_model("tiny", adapter=two_epochs)
    errors = {}
    for dtype in ("bf16", "fp16"):
        half = attribute(
            loaded,
            *data,
            AttributeSettings(methods=["gradsim", "repsim"], batch_size=8, store_dtype=dtype),
            tmp_path / dtype,
        )
        assert read_json(tmp_path / dtype / "run.json")["store"]["dtype"] == dtype
        for name in ("gradsim", "repsim"):
            ref = reference.scores[name]
            assert not torch.equal(half.scores[name], ref)
            assert torch.allclose(half.scores[name], ref, rtol=0, atol=2e-2 * ref.abs().max())
        errors[dtype] = float((half.scores["gradsim"] - reference.scores["gradsim"]).abs().max())
    assert errors["fp16"] < errors["bf16"], "fp16 keeps 11 significant bits to bf16's 8"
    projected = attribute(
        loaded,
        *data,
        AttributeSettings(methods=["gradsim"], batch_size=8, proj_dim=64, keep_store=True),
        tmp_path / "proj",
    )
    manifest = read_json(default_store_dir(tmp_path / "proj") / "manifest.json")
    widths = manifest["kinds"]["grads:train"]["blocks"]
    assert (
        max(widths.values()) == 64 < max(manifest["kinds"]["grads:train"]["source_widths"].values())
    )
    ref = reference.scores["gradsim"]
    corr = torch.corrcoef(torch.stack([projected.scores["gradsim"].flatten(), ref.flatten()]))[0, 1]
    assert corr > 0.9
    with pytest.raises(ConfigError, match="--proj-dim: ekfac need unprojected gradients"):
        attribute(
            loaded,
            *data,
            AttributeSettings(methods=["gradsim", "ekfac"], proj_dim=64),
            tmp_path / "nope",
        )
    assert not (tmp_path / "nope").exists() and not default_store_dir(tmp_path / "nope").exists()


SIGKILL_METHODS = ("gradsim", "ekfac", "repsim")  # gradients, K-FAC sums, representations


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-W", "ignore", "-m", "attriblm", *args]


def _stored_shards(store: Path) -> int:
    return sum(len(shards) for shards in listed_shards(store).values())


def test_sigkill_mid_run_then_rerun_gives_identical_scores(
    tmp_path, two_epochs, samples_dir, attriblm_cli
):
    """Only the killed run needs its own process; the reference and the rerun go through the
    same entry point in this one (same thread settings, so bit-identical scores are expected)."""
    spec = str(samples_dir / "grammars_small")
    args = ["attribute", "--model", "tiny", "--adapter", str(two_epochs)]
    args += ["--train", f"{spec}:train", "--queries", f"{spec}:test", "--batch-size", "2", "-q"]
    for method in SIGKILL_METHODS:
        args += ["-m", method]
    ref = tmp_path / "ref"
    done = attriblm_cli(*args, "--out", ref)
    assert done.returncode == 0, done.stderr

    out = tmp_path / "killed" / "run"
    store = default_store_dir(out)
    proc = subprocess.Popen(
        _cli(*args, "--out", str(out)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 300
    while _stored_shards(store) < 3:  # grads, kfac sums of batch 1, then more
        assert proc.poll() is None, f"exited before the kill: {proc.stderr.read().decode()}"
        assert time.monotonic() < deadline, "no shard stored within 300 s"
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    kinds = listed_shards(store)
    stored = sum(s["stop"] - s["start"] for shards in kinds.values() for s in shards)
    assert 0 < stored < 280  # all: 80 train rows × 3 kinds + 20 query rows × 2 kinds
    # a batch is reused when both its gradients and its K-FAC sums were stored before the kill
    both = {(s["start"], s["stop"]) for s in kinds["grads:train"]} & {
        (s["start"], s["stop"]) for s in kinds["kfac:train"]
    }
    assert both
    # no run dir or .partial; the killed process's lock files stay (the rerun takes them over)
    left = sorted(p.name for p in out.parent.iterdir())
    assert left == [".run.lock", ".run.store.lock", "run.store"]

    again = attriblm_cli(*args, "--out", out)
    assert again.returncode == 0, again.stderr
    rows = read_json(out / "run.json")["store"]["rows"]
    assert rows["grads:train"]["reused"] == sum(stop - start for start, stop in both) > 0
    for method in SIGKILL_METHODS:
        got = load_tensors(out / "scores" / f"{method}.safetensors")["scores"]
        expected = load_tensors(ref / "scores" / f"{method}.safetensors")["scores"]
        assert torch.equal(got, expected), method
    assert sorted(p.name for p in out.parent.iterdir()) == ["run"]
