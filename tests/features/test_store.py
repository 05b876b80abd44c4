"""The sharded feature store: round trips, dtypes, atomic manifest, resume rule, projection."""

from __future__ import annotations

import json

import pytest
import torch

from attriblm.errors import ConfigError, DataError
from attriblm.features.projection import Projection, projection_matrix
from attriblm.features.store import JOURNAL, MANIFEST, FeatureStore, batch_ranges, listed_shards

SETTINGS = {"model": "tiny", "batch_size": 4}


def _rows(n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "layers.0.q_proj.lora_A": torch.randn(n, 12, generator=g),
        "layers.0.q_proj.lora_B": torch.randn(n, 5, generator=g) * 1e-3,
    }


def _fill(store: FeatureStore, kind: str, rows: dict[str, torch.Tensor], batch: int, **kw) -> None:
    n = len(next(iter(rows.values())))
    store.begin(kind, n_rows=n, key="data-1", **kw)
    for start, stop in store.pending([kind], batch):
        store.write(kind, start, stop, {b: t[start:stop] for b, t in rows.items()})


def test_fp32_round_trip_is_exact_and_keeps_block_order(tmp_path):
    rows = _rows(10)
    reordered = dict(reversed(list(rows.items())))  # not alphabetical: order must survive
    store = FeatureStore(tmp_path / "s", SETTINGS)
    _fill(store, "grads:train", reordered, batch=4)
    assert store.done("grads:train") == [(0, 4), (4, 8), (8, 10)]
    assert store.is_complete("grads:train")
    again = FeatureStore(tmp_path / "s", SETTINGS).read("grads:train")
    assert list(again) == list(reordered)
    for block, expected in reordered.items():
        assert again[block].dtype == torch.float32
        assert torch.equal(again[block], expected)
    chunks = list(FeatureStore(tmp_path / "s", SETTINGS).iter_rows("grads:train"))
    assert [(a, b) for a, b, _ in chunks] == batch_ranges(10, 4)
    assert torch.equal(
        torch.cat([c[2]["layers.0.q_proj.lora_A"] for c in chunks]), rows["layers.0.q_proj.lora_A"]
    )


def test_bf16_stores_half_and_loads_close_as_float32(tmp_path):
    rows = _rows(10)
    store = FeatureStore(tmp_path / "s", SETTINGS, dtype="bf16")
    _fill(store, "grads:train", rows, batch=5)
    out = store.read("grads:train")
    for block, expected in rows.items():
        assert out[block].dtype == torch.float32
        assert torch.allclose(out[block], expected, rtol=2**-8, atol=0)
        assert not torch.equal(out[block], expected)
    payload = (tmp_path / "s" / "grads.train" / "000000000-000000005.safetensors").stat().st_size
    fp32 = FeatureStore(tmp_path / "f", SETTINGS)
    _fill(fp32, "grads:train", rows, batch=5)
    full = (tmp_path / "f" / "grads.train" / "000000000-000000005.safetensors").stat().st_size
    assert payload < 0.7 * full


def test_fp16_scales_rows_so_tiny_gradients_survive(tmp_path):
    """LoRA-sized entries (1e-9…1e-6) underflow a plain fp16 cast; row scaling keeps them."""
    g = torch.Generator().manual_seed(5)
    magnitudes = torch.tensor([1e-9, 1e-7, 1e-5, 1e-3])[:, None]
    rows = {"blk": torch.randn(4, 300, generator=g) * magnitudes}
    rows["blk"][1, :10] = 0.0
    rows["zeros"] = torch.zeros(4, 3)
    assert (rows["blk"][0].half() == 0).all(), "the test needs entries a plain cast flushes"
    store = FeatureStore(tmp_path / "s", SETTINGS, dtype="fp16")
    _fill(store, "grads:train", rows, batch=3)
    again = FeatureStore(tmp_path / "s", SETTINGS, dtype="fp16")
    out, chunks = again.read("grads:train"), list(again.iter_rows("grads:train"))
    assert torch.equal(out["zeros"], rows["zeros"])
    assert torch.equal(torch.cat([c[2]["blk"] for c in chunks]), out["blk"])
    got, expected = out["blk"], rows["blk"]
    assert got.dtype == torch.float32 and not torch.equal(got, expected)
    scale = expected.abs().amax(dim=1, keepdim=True)
    normal = expected.abs() >= 2**-14 * scale
    assert ((got - expected).abs() <= 2**-11 * expected.abs() + 1e-6 * scale)[normal].all()
    assert ((got - expected).abs() <= 2**-25 * scale * 1.0001)[~normal].all()
    cosine = torch.nn.functional.cosine_similarity(got, expected, dim=1)
    assert (cosine > 1 - 1e-6).all()
    size = (tmp_path / "s" / "grads.train" / "000000000-000000003.safetensors").stat().st_size
    fp32 = FeatureStore(tmp_path / "f", SETTINGS)
    _fill(fp32, "grads:train", rows, batch=3)
    full = (tmp_path / "f" / "grads.train" / "000000000-000000003.safetensors").stat().st_size
    assert size < 0.6 * full


def test_stats_are_summed_across_shards_in_float64(tmp_path):
    store = FeatureStore(tmp_path / "s", SETTINGS)
    store.begin("kfac:train", n_rows=6, key="k")
    parts = [torch.randn(3, 3, dtype=torch.float64) for _ in range(3)]
    for i, part in enumerate(parts):
        store.write("kfac:train", 2 * i, 2 * i + 2, {}, {"A/x": part, "n": torch.tensor(2)})
    total = FeatureStore(tmp_path / "s", SETTINGS).sum_stats("kfac:train")
    assert list(total) == ["A/x", "n"]
    assert torch.equal(total["A/x"], parts[0] + parts[1] + parts[2])
    assert total["A/x"].dtype == torch.float64 and int(total["n"]) == 6


def test_resume_reports_the_rows_done_and_computes_the_rest(tmp_path):
    rows = _rows(10)
    store = FeatureStore(tmp_path / "s", SETTINGS)
    store.begin("grads:train", n_rows=10, key="data-1")
    store.write("grads:train", 0, 4, {b: t[:4] for b, t in rows.items()})
    # a new process: the finished batch is kept, only the rest is pending
    resumed = FeatureStore(tmp_path / "s", SETTINGS)
    resumed.begin("grads:train", n_rows=10, key="data-1")
    assert resumed.reset_reason is None
    assert resumed.done("grads:train") == [(0, 4)]
    assert resumed.pending(["grads:train"], 4) == [(4, 8), (8, 10)]
    with pytest.raises(Exception, match="incomplete"):
        resumed.read("grads:train")
    _fill(resumed, "grads:train", rows, batch=4)
    assert torch.equal(
        resumed.read("grads:train")["layers.0.q_proj.lora_B"], rows["layers.0.q_proj.lora_B"]
    )


def test_a_leftover_tmp_file_does_not_corrupt_the_store(tmp_path):
    rows = _rows(8)
    store = FeatureStore(tmp_path / "s", SETTINGS)
    store.begin("grads:train", n_rows=8, key="data-1")
    store.write("grads:train", 0, 4, {b: t[:4] for b, t in rows.items()})
    # a kill during the next manifest write / shard write leaves hidden temporaries (and maybe
    # a shard file the manifest does not list yet): neither is ever read
    (tmp_path / "s" / f".{MANIFEST}.abc123.tmp").write_text('{"format": "garbage", "tru')
    (
        tmp_path / "s" / "grads.train" / ".000000004-000000008.safetensors.x.safetensors.tmp"
    ).write_bytes(b"\0")
    orphan = tmp_path / "s" / "grads.train" / "000000004-000000008.safetensors"
    orphan.write_bytes(b"torn")
    resumed = FeatureStore(tmp_path / "s", SETTINGS)
    resumed.begin("grads:train", n_rows=8, key="data-1")
    assert resumed.done("grads:train") == [(0, 4)]
    assert sorted(p.name for p in (tmp_path / "s").rglob("*")) == sorted(
        ["grads.train", MANIFEST, "000000000-000000004.safetensors"]
    )
    _fill(resumed, "grads:train", rows, batch=4)
    assert torch.equal(
        resumed.read("grads:train")["layers.0.q_proj.lora_A"], rows["layers.0.q_proj.lora_A"]
    )


def test_the_manifest_records_layout_hashes_and_settings(tmp_path):
    store = FeatureStore(tmp_path / "s", SETTINGS, projection=Projection(dim=8))
    _fill(store, "grads:train", _rows(6), batch=4, project=True)
    store.compact()
    manifest = json.loads((tmp_path / "s" / MANIFEST).read_text())
    assert manifest["settings"] == SETTINGS and len(manifest["key"]) == 64
    assert manifest["dtype"] == "fp32" and manifest["projection"] == {
        "dim": 8,
        "kind": "gaussian",
        "seed": 0,
    }
    kind = manifest["kinds"]["grads:train"]
    assert kind["blocks"] == {"layers.0.q_proj.lora_A": 8, "layers.0.q_proj.lora_B": 5}
    assert kind["source_widths"] == {"layers.0.q_proj.lora_A": 12, "layers.0.q_proj.lora_B": 5}
    assert [(s["start"], s["stop"]) for s in kind["shards"]] == [(0, 4), (4, 6)]
    for shard in kind["shards"]:
        path = tmp_path / "s" / "grads.train" / shard["file"]
        assert path.stat().st_size == shard["bytes"] and len(shard["sha256"]) == 64


def test_a_damaged_shard_is_a_data_error_naming_it(tmp_path):
    store = FeatureStore(tmp_path / "s", SETTINGS)
    _fill(store, "grads:train", _rows(4), batch=4)
    shard = tmp_path / "s" / "grads.train" / "000000000-000000004.safetensors"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF  # same size, different content
    shard.write_bytes(bytes(data))
    with pytest.raises(
        DataError, match="000000000-000000004.safetensors: feature store shard is damaged"
    ):
        FeatureStore(tmp_path / "s", SETTINGS).read("grads:train")


def test_other_settings_start_fresh_or_error(tmp_path):
    store = FeatureStore(tmp_path / "s", SETTINGS)
    _fill(store, "grads:train", _rows(8), batch=4)
    with pytest.raises(ConfigError, match="feature store made with other settings"):
        FeatureStore(tmp_path / "s", {**SETTINGS, "batch_size": 8}, if_mismatch="error")
    with pytest.raises(ConfigError, match="feature store made with other settings"):
        FeatureStore(tmp_path / "s", SETTINGS, dtype="bf16", if_mismatch="error")
    fresh = FeatureStore(tmp_path / "s", {**SETTINGS, "batch_size": 8})
    assert fresh.reset_reason == "other settings" and fresh.kinds() == []
    assert not (tmp_path / "s" / "grads.train").exists()


def test_a_kind_with_other_data_is_dropped_alone(tmp_path):
    store = FeatureStore(tmp_path / "s", SETTINGS)
    _fill(store, "grads:train", _rows(8), batch=4)
    _fill(store, "grads:queries", _rows(4), batch=4)
    again = FeatureStore(tmp_path / "s", SETTINGS)
    again.begin("grads:queries", n_rows=4, key="data-2")
    again.begin("grads:train", n_rows=8, key="data-1")
    assert again.done("grads:queries") == [] and again.is_complete("grads:train")


def test_a_directory_that_is_not_a_store_is_refused(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="is not an attriblm feature store"):
        FeatureStore(tmp_path / "mine", SETTINGS)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(ConfigError, match="--store-dtype.*fp32 [|] bf16 [|] fp16"):
        FeatureStore(tmp_path / "x", SETTINGS, dtype="int8")


def test_in_memory_store_has_the_same_interface():
    rows = _rows(9)
    store = FeatureStore(None, dtype="bf16")
    _fill(store, "grads:train", rows, batch=4)
    out = store.read("grads:train")
    assert torch.allclose(out["layers.0.q_proj.lora_A"], rows["layers.0.q_proj.lora_A"], rtol=2**-8)


def test_projection_is_deterministic_per_block_and_seed(tmp_path):
    m1 = projection_matrix("rademacher", 3, "blk", 40, 16)
    assert m1.shape == (40, 16) and m1.dtype == torch.float32
    assert torch.equal(m1, projection_matrix("rademacher", 3, "blk", 40, 16))
    assert set((m1 * 4).unique().tolist()) == {-1.0, 1.0}  # ±1/√16
    assert not torch.equal(m1, projection_matrix("rademacher", 3, "other", 40, 16))
    assert not torch.equal(m1, projection_matrix("rademacher", 4, "blk", 40, 16))
    p = Projection(dim=16, kind="rademacher", seed=3)
    x = torch.randn(5, 40)
    assert torch.equal(p.apply("blk", x), x @ m1)
    assert torch.equal(p.apply("blk", x[:, :16]), x[:, :16])  # not wider than dim: unchanged
    # train and queries, stored separately, get the same matrix per block
    store = FeatureStore(tmp_path / "s", SETTINGS, projection=Projection(dim=8, seed=3))
    train, queries = _rows(6, seed=1), _rows(3, seed=2)
    _fill(store, "grads:train", train, batch=4, project=True)
    _fill(store, "grads:queries", queries, batch=4, project=True)
    g, q = store.read("grads:train"), store.read("grads:queries")
    a, b = "layers.0.q_proj.lora_A", "layers.0.q_proj.lora_B"
    m = projection_matrix("gaussian", 3, a, 12, 8)
    assert torch.equal(g[a], train[a] @ m) and torch.equal(q[a], queries[a] @ m)
    assert torch.equal(g[b], train[b])  # 5 ≤ 8: stored as is
    with pytest.raises(ConfigError, match="--proj-kind"):
        Projection(dim=8, kind="sparse")
    with pytest.raises(ConfigError, match="--proj-dim"):
        Projection(dim=0)


@pytest.mark.parametrize("kind", ["gaussian", "rademacher"])
def test_projected_inner_products_approximate_the_originals(kind):
    """JL: E[(Pᵀg)·(Pᵀh)] = g·h, with error ~ √(2/k)·‖g‖‖h‖; norms are preserved alike."""
    d, k, n = 4096, 1024, 24
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(n, d, generator=gen)
    x = base + 0.8 * torch.randn(1, d, generator=gen)  # correlated rows: non-trivial products
    p = Projection(dim=k, kind=kind, seed=7)
    y = p.apply("layers.3.v_proj.lora_B", x)
    assert y.shape == (n, k)
    exact, approx = x @ x.T, y @ y.T
    norms = x.norm(dim=1)
    rel = (approx - exact).abs() / (norms[:, None] * norms[None, :])
    assert rel.max() < 6 * (2 / k) ** 0.5  # ≈ 0.27; observed ~0.1
    assert rel.mean() < 2 * (2 / k) ** 0.5
    assert ((y.norm(dim=1) / norms) - 1).abs().max() < 0.15
    # a second, unrelated seed gives a different but equally good sketch
    y2 = Projection(dim=k, kind=kind, seed=8).apply("layers.3.v_proj.lora_B", x)
    assert not torch.equal(y, y2)
    assert ((y2 @ y2.T - exact).abs() / (norms[:, None] * norms[None, :])).mean() < 2 * (
        2 / k
    ) ** 0.5


def test_shards_are_journaled_then_compacted_into_the_manifest(tmp_path):
    rows = _rows(12)
    store = FeatureStore(tmp_path / "s", SETTINGS)
    _fill(store, "grads:train", rows, batch=4)
    on_disk = json.loads((tmp_path / "s" / MANIFEST).read_text())["kinds"]["grads:train"]
    assert on_disk["shards"] == [] and on_disk["blocks"] is None  # written before any shard
    assert len((tmp_path / "s" / JOURNAL).read_text().splitlines()) == 3
    assert [(s["start"], s["stop"]) for s in listed_shards(tmp_path / "s")["grads:train"]] == (
        batch_ranges(12, 4)
    )
    # a kill while appending leaves a torn last line; its shard file is an orphan
    with open(tmp_path / "s" / JOURNAL, "a") as journal:
        journal.write('{"kind": "grads:train", "shard": {"file": "0000')
    again = FeatureStore(tmp_path / "s", SETTINGS)
    again.begin("grads:train", n_rows=12, key="data-1")
    assert again.is_complete("grads:train") and not (tmp_path / "s" / JOURNAL).exists()
    kind = json.loads((tmp_path / "s" / MANIFEST).read_text())["kinds"]["grads:train"]
    assert len(kind["shards"]) == 3 and kind["blocks"] == {b: t.shape[1] for b, t in rows.items()}
    for block, expected in again.read("grads:train").items():
        assert torch.equal(expected, rows[block])


def test_bookkeeping_bytes_grow_linearly_with_shards(tmp_path, monkeypatch):
    """The manifest is not rewritten per shard: total bytes stay a small multiple of its size."""
    import attriblm.features.store as store_module

    written = []
    real = store_module.write_json

    def counting(path, obj):
        written.append(len(json.dumps(obj, indent=2)))
        return real(path, obj)

    monkeypatch.setattr(store_module, "write_json", counting)
    n = 600
    rows = {"blk": torch.zeros(n, 2)}
    store = FeatureStore(tmp_path / "s", SETTINGS)
    _fill(store, "grads:train", rows, batch=1)
    store.compact()
    journal = tmp_path / "s" / JOURNAL
    assert not journal.exists() and store.is_complete("grads:train")
    assert sum(written) < 8 * written[-1], "per-shard manifest rewrites would be ~n/2 times"
    assert len(written) < 20
