from __future__ import annotations

import json

import pytest
import torch

from attriblm.data.loaders import load_examples
from attriblm.data.schema import Example
from attriblm.io import load_tensors, read_json, read_yaml
from attriblm.methods.registry import available_methods, create_method
from attriblm.metrics.ranking import TIE_SEED, rank_train, run_tie_seed, top1_accuracy
from attriblm.models.loading import load_model
from attriblm.pipeline.attribute import AttributeSettings, attribute
from attriblm.pipeline.run_info import topk_rows
from attriblm.pipeline.scoring import prepare_features


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, samples_dir, tiny_adapter):
    spec = str(samples_dir / "grammars_small")
    train = load_examples(f"{spec}:train")
    queries = load_examples(f"{spec}:test")
    out = tmp_path_factory.mktemp("run") / "run"
    run = attribute(
        load_model("tiny", adapter=tiny_adapter),
        train,
        queries,
        AttributeSettings(methods=["all"]),
        out,
        sources={"train": f"{spec}:train", "queries": f"{spec}:test"},
    )
    return run, train, queries


def test_every_method_writes_a_score_matrix(tiny_run):
    run, train, queries = tiny_run
    assert sorted(run.scores) == sorted(available_methods())
    for name in available_methods():
        scores = load_tensors(run.out_dir / "scores" / f"{name}.safetensors")
        assert list(scores) == ["scores"]
        matrix = scores["scores"]
        assert matrix.shape == (len(queries), len(train)) == (20, 80)
        assert matrix.dtype == torch.float32
        assert torch.isfinite(matrix).all()
        assert torch.equal(matrix, run.scores[name])


def test_topk_rows_follow_the_scores(tiny_run):
    run, train, _ = tiny_run
    rows = [json.loads(line) for line in (run.out_dir / "topk.jsonl").read_text().splitlines()]
    assert len(rows) == len(run.scores) * 20
    for row in rows:
        top = row["top"]
        assert len(top) == 10
        scores = run.scores[row["method"]][row["query"]]
        best = int(torch.argmax(scores))
        assert top[0]["score"] == pytest.approx(float(scores[best]))
        assert [t["rank"] for t in top] == list(range(1, 11))
        assert all(a["score"] >= b["score"] for a, b in zip(top, top[1:], strict=False))
        assert all(t["label"] == train[t["index"]].label for t in top)
        order = rank_train(scores[None], run_tie_seed(run.info), queries=[row["query"]])[0]
        assert [t["index"] for t in top] == order[:10].tolist()  # the metrics' ranking


def test_topk_rows_break_ties_as_the_metrics_do():
    """Every score equal: topk.jsonl is the metrics' seeded tie order, not file order."""
    train = [Example(f"p{i}", "r", "target" if i < 5 else "other") for i in range(20)]
    queries = ["target"] * 200
    scores = torch.zeros(len(queries), len(train))
    rows = topk_rows("gradsim", scores, train, k=3)
    order = rank_train(scores)
    assert [[t["index"] for t in r["top"]] for r in rows] == order[:, :3].tolist()
    hits = sum(r["top"][0]["label"] == "target" for r in rows) / len(rows)
    assert hits == top1_accuracy(scores, queries, [e.label for e in train])
    assert hits < 0.5  # chance is 5 / 20; file order would give 1.0


def test_run_json_and_config_record_the_run(tiny_run):
    run, _, _ = tiny_run
    info = read_json(run.out_dir / "run.json")
    assert info["n_train"] == 80 and info["n_query"] == 20
    assert info["loss_mask"] == "response"
    assert info["ranking"]["tie_seed"] == TIE_SEED and "permutation" in info["ranking"]["ties"]
    assert set(info["versions"]) >= {"attriblm", "torch", "transformers", "peft"}
    assert info["timings_seconds"]["total"] > 0
    lambdas = info["methods"]["exact"]["lambda"]
    assert set(lambdas) == set(info["blocks"]) and all(v > 0 for v in lambdas.values())
    config = read_yaml(run.out_dir / "config.yaml")
    assert config["method"] == available_methods()
    assert config["out"] == str(run.out_dir) and config["loss_mask"] == "response"
    assert config["train"].endswith("grammars_small:train")
    assert config["adapter"] is not None
    resolved = config["resolved"]  # the whole settings, read back as they were
    assert resolved["settings"] == AttributeSettings(methods=["all"]).to_dict()
    assert AttributeSettings.from_dict(resolved["settings"]) == AttributeSettings(methods=["all"])
    assert resolved["n_train"] == len(tiny_run[1]) and resolved["model"]["spec"] == "tiny"


def test_jsonl_input_gives_the_same_scores(tiny_run, samples_dir, tiny_adapter, tmp_path):
    run, _, _ = tiny_run
    train = load_examples(str(samples_dir / "grammars_small_train.jsonl"))
    queries = load_examples(str(samples_dir / "grammars_small_test.jsonl"))
    again = attribute(
        load_model("tiny", adapter=tiny_adapter),
        train,
        queries,
        AttributeSettings(methods=["gradsim", "repsim"]),
        tmp_path / "run",
    )
    for name in ("gradsim", "repsim"):
        assert torch.allclose(again.scores[name], run.scores[name], rtol=1e-5, atol=1e-6)


def test_lissa_and_exact_agree_on_the_tiny_model(samples_dir, tiny_adapter):
    """Converged LiSSA and the exact solve precondition the real query gradients alike."""
    spec = str(samples_dir / "grammars_small")
    loaded = load_model("tiny", adapter=tiny_adapter)
    prepared = prepare_features(
        loaded,
        load_examples(f"{spec}:train"),
        load_examples(f"{spec}:test"),
        ["exact", "lissa"],
        AttributeSettings(),
    )
    train, queries = prepared.train, prepared.queries
    exact, _ = create_method("exact").preconditioned(train, queries)
    lissa, info = create_method("lissa").preconditioned(train, queries)
    assert info["converged"]
    for block, expected in exact.items():
        rel = (lissa[block] - expected).norm() / expected.norm()
        assert rel < 1e-5, f"{block}: relative error {rel:.2e}"


def test_bf16_model_ranks_like_fp32(tmp_path, samples_dir, tiny_adapter, tiny_run):
    """``--dtype bf16``: features still accumulate in float32, so rankings stay close to fp32's."""
    from scipy.stats import spearmanr

    spec = str(samples_dir / "grammars_small")
    methods = ["gradsim", "datainf", "ekfac", "repsim"]
    run = attribute(
        load_model("tiny", adapter=tiny_adapter, dtype="bf16"),
        load_examples(f"{spec}:train"),
        load_examples(f"{spec}:test"),
        AttributeSettings(methods=methods),
        tmp_path / "bf16",
    )
    assert read_json(tmp_path / "bf16" / "run.json")["model"]["dtype"] == "bf16"
    for name in methods:
        ref = tiny_run[0].scores[name]
        got = run.scores[name]
        assert got.dtype == torch.float32 and torch.isfinite(got).all()
        rho = sum(spearmanr(a, b).statistic for a, b in zip(got, ref, strict=True)) / len(ref)
        assert rho > 0.9, (name, rho)


def test_run_directory_is_private_to_the_user(tiny_run):
    """Staged with mkdtemp / mkstemp: 0o700 directory and 0o600 files whatever the umask."""
    run = tiny_run[0].out_dir
    assert run.stat().st_mode & 0o777 == 0o700
    for name in ("run.json", "config.yaml", "topk.jsonl", "scores/gradsim.safetensors"):
        assert (run / name).stat().st_mode & 0o777 == 0o600, name


def test_gradsim_and_datainf_alone_are_streamed_from_the_store(tmp_path, tiny_run):
    """Only streamable methods: scores come shard by shard and equal the in-memory ones."""
    run, train, queries = tiny_run
    streamed = attribute(
        load_model("tiny", adapter=run.info["model"]["adapter"]),
        train,
        queries,
        AttributeSettings(methods=["gradsim", "datainf"], batch_size=8),
        tmp_path / "streamed",
    )
    info = read_json(tmp_path / "streamed" / "run.json")
    assert info["streamed"] is True and not run.info["streamed"]
    assert info["blocks"] == run.info["blocks"]
    for name in ("gradsim", "datainf"):
        assert "streamed" in info["methods"][name]
        torch.testing.assert_close(streamed.scores[name], run.scores[name], rtol=1e-5, atol=1e-6)
    # λ is a float64 mean of float32 gradients, and batches of 8 pad to other lengths than the
    # reference run's batches of 16: the gradients agree to float32 rounding (~1e-9 relative in
    # λ, which depends on the thread count), not bit for bit.
    assert info["methods"]["datainf"]["lambda"] == pytest.approx(
        run.info["methods"]["datainf"]["lambda"], rel=1e-6
    )
