"""torchrun: 2 gloo processes give the single-process scores and adapters (rel. error < 1e-5:
scores by their largest entry, each adapter matrix in Frobenius norm)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attriblm.dist import SINGLE, Dist, launched_world_size, local_rank
from attriblm.io import load_tensors, read_json
from attriblm.models.loading import resolve_device

# gradients, K-FAC sums (ekfac/kfac: all-reduced), checkpoint gradients (tracin), representations
METHODS = ["gradsim", "datainf", "lissa-paper", "exact", "kfac", "ekfac", "tracin", "repsim"]
# 80 train rows → 4 batches of 24 (ranks 0,1,0,1); 20 queries → 1 batch: rank 1 gets none
BATCH = "24"


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}


def _single(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "attriblm", *args],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )


def _torchrun(*args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    return subprocess.run(
        [*launcher, f"--nproc-per-node={nproc}", "-m", "attriblm", *args],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def _frobenius_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """``‖a − b‖_F / ‖b‖_F``. For trained weights rather than the largest-entry error: Adam
    divides by √v, which magnifies float32 reduction-order noise in single entries whose
    gradients are tiny (measured: 1.4e-5 in the largest entry, 1.7e-6 in Frobenius norm)."""
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def _finetune_args(samples_dir: Path, out: Path) -> list[str]:
    return [
        "finetune", "--model", "tiny", "--train", f"{samples_dir / 'grammars_small'}:train",
        "--out", str(out), "--epochs", "2", "--lr", "1e-3", "--batch-size", "16",
        "--lora-dropout", "0", "--quiet",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def finetunes(tmp_path_factory, samples_dir) -> tuple[Path, Path]:
    """The same fine-tune (LoRA dropout 0) in one process and in two torchrun processes."""
    root = tmp_path_factory.mktemp("dist-finetune")
    single = _single(*_finetune_args(samples_dir, root / "single"))
    assert single.returncode == 0, single.stderr
    multi = _torchrun(*_finetune_args(samples_dir, root / "multi"))
    assert multi.returncode == 0, multi.stderr + multi.stdout
    return root / "single", root / "multi"


def test_torchrun_finetune_matches_single_process(finetunes):
    single, multi = finetunes
    for adapter in ["adapter", "checkpoints/epoch-001", "checkpoints/epoch-002"]:
        a = load_tensors(single / adapter / "adapter_model.safetensors")
        b = load_tensors(multi / adapter / "adapter_model.safetensors")
        assert a.keys() == b.keys()
        for name in a:
            assert _frobenius_error(b[name], a[name]) < 1e-5, (adapter, name)
    log_single = read_json(single / "train_log.json")
    log_multi = read_json(multi / "train_log.json")
    assert log_multi["world_size"] == 2 and log_single["world_size"] == 1
    steps = zip(log_single["steps"], log_multi["steps"], strict=True)
    losses = [(s["loss"], m["loss"]) for s, m in steps]
    assert len(losses) == 10
    assert all(abs(s - m) <= 1e-5 * abs(s) for s, m in losses)


def test_torchrun_attribute_matches_single_process(finetunes, samples_dir, tmp_path):
    adapter = finetunes[0] / "adapter"
    data = str(samples_dir / "grammars_small")
    common = [
        "attribute", "--model", "tiny", "--adapter", str(adapter), "--train", f"{data}:train",
        "--queries", f"{data}:test", "--batch-size", BATCH, "--quiet",
        *[arg for m in METHODS for arg in ("--method", m)],
    ]  # fmt: skip
    single = _single(*common, "--out", str(tmp_path / "single"))
    assert single.returncode == 0, single.stderr
    multi = _torchrun(*common, "--out", str(tmp_path / "multi"))
    assert multi.returncode == 0, multi.stderr + multi.stdout
    assert multi.stdout.count("wrote ") == 1  # rank 0 alone reports
    for method in METHODS:
        a = load_tensors(tmp_path / "single" / "scores" / f"{method}.safetensors")["scores"]
        b = load_tensors(tmp_path / "multi" / "scores" / f"{method}.safetensors")["scores"]
        assert a.shape == b.shape == (20, 80)
        assert _relative_error(b, a) < 1e-5, method
    info = read_json(tmp_path / "multi" / "run.json")
    assert info["distributed"]["world_size"] == 2
    rows = info["store"]["rows"]  # rank 0's share: train batches 0 and 2, the one query batch
    assert rows["grads:train"]["computed"] == 48 and rows["grads:queries"]["computed"] == 20
    assert not (tmp_path / "multi.store").exists()  # every rank's store removed after success
    assert sorted(p.name for p in tmp_path.iterdir()) == ["multi", "single"]


def test_torchrun_user_error_is_reported_by_every_rank(samples_dir, tmp_path):
    data = str(samples_dir / "grammars_small")
    result = _torchrun(
        "attribute", "--model", "tiny", "--train", f"{data}:train", "--queries",
        f"{data}:test", "--method", "no-such-method", "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("attriblm: error:")]
    assert len(errors) == 2 and all("no-such-method" in line for line in errors)
    assert not (tmp_path / "run").exists()


def test_single_process_helpers_are_identities():
    assert not SINGLE.active and SINGLE.is_main
    assert SINGLE.mine([1, 2, 3]) == [1, 2, 3]
    t = torch.arange(6.0).reshape(2, 3)
    assert SINGLE.all_reduce_sum(t) is t
    assert SINGLE.broadcast_json({"a": [1, 2]}) == {"a": [1, 2]}


def test_mine_splits_batches_round_robin():
    ranks = [Dist(rank=r, world_size=3) for r in range(3)]
    shares = [d.mine(list(range(7))) for d in ranks]
    assert shares == [[0, 3, 6], [1, 4], [2, 5]]
    assert sorted(sum(shares, [])) == list(range(7))


def test_torchrun_environment_is_read(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert launched_world_size() == 1 and local_rank() == 0
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert launched_world_size() == 4 and local_rank() == 3


def test_device_auto_is_cpu_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("auto") == torch.device("cpu")  # gloo ranks share the CPU


def test_device_cuda_under_torchrun_is_the_local_rank(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("auto") == torch.device("cuda", 1)
    assert resolve_device("cuda") == torch.device("cuda", 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)  # explicit index wins
