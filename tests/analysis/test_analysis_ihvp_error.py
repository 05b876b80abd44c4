"""iHVP error: exact vs itself is zero, gradsim matches a hand computation, the real-model run."""

from __future__ import annotations

import math

import pytest
import torch

from attriblm.analysis.ihvp_error import (
    compare_ihvp,
    mean_spearman,
    positive_rescaled_error,
    run_ihvp_error,
)
from attriblm.errors import ConfigError
from attriblm.io import read_json
from attriblm.methods import registry
from attriblm.methods.base import FeatureSet
from attriblm.methods.damping import Damping
from attriblm.methods.exact import Exact


def _features(seed: int = 0) -> tuple[FeatureSet, FeatureSet]:
    gen = torch.Generator().manual_seed(seed)
    widths = {"wide": 30, "narrow": 5}  # wider than n = 12 (Woodbury) and narrower (dense)
    train = {b: torch.randn(12, d, generator=gen) for b, d in widths.items()}
    queries = {b: torch.randn(4, d, generator=gen) for b, d in widths.items()}
    return FeatureSet(grads=train), FeatureSet(grads=queries)


def test_exact_against_itself_is_zero_error_and_cosine_one():
    train, queries = _features()
    report = compare_ihvp(train, queries, ["exact"], Damping("absolute", 0.3))
    row = report["methods"]["exact"]
    assert row["rel_error"] == pytest.approx(0.0, abs=1e-12)
    assert row["rel_error_scaled"] == pytest.approx(0.0, abs=1e-6)
    assert row["cosine"] == pytest.approx(1.0, abs=1e-12)
    assert row["spearman"]["mean"] == pytest.approx(1.0)
    assert row["spearman"]["n_used"] == 4
    for block in ("wide", "narrow"):
        assert row["blocks"][block]["rel_error"] == pytest.approx(0.0, abs=1e-12)
        assert row["blocks"][block]["cosine"] == pytest.approx(1.0, abs=1e-12)
    assert report["lambda"] == {"wide": 0.3, "narrow": 0.3}


def test_gradsim_error_matches_hand_computation():
    # g_1 = (a, 0), g_2 = (0, b): H = diag(a²/2, b²/2); v = (1, 1); x = (H + λI)⁻¹ v.
    a, b, lam = 2.0, 0.5, 0.25
    train = FeatureSet(grads={"blk": torch.tensor([[a, 0.0], [0.0, b]])})
    queries = FeatureSet(grads={"blk": torch.tensor([[1.0, 1.0]])})
    x = torch.tensor([1 / (a**2 / 2 + lam), 1 / (b**2 / 2 + lam)], dtype=torch.float64)
    v = torch.ones(2, dtype=torch.float64)
    expected_rel = float((v - x).norm() / x.norm())
    expected_cos = float(x.sum() / (v.norm() * x.norm()))
    report = compare_ihvp(train, queries, ["gradsim"], Damping("absolute", lam))
    row = report["methods"]["gradsim"]
    assert row["rel_error"] == pytest.approx(expected_rel, rel=1e-9)
    assert row["cosine"] == pytest.approx(expected_cos, rel=1e-9)
    assert row["rel_error_scaled"] == pytest.approx(math.sqrt(1 - expected_cos**2), rel=1e-6)
    assert row["blocks"]["blk"]["rel_error"] == pytest.approx(expected_rel, rel=1e-9)


def test_approximate_methods_have_bounded_cosines_and_lissa_matches_exact():
    train, queries = _features(1)
    methods = ["gradsim", "datainf", "lissa-paper", "lissa", "cg"]
    report = compare_ihvp(train, queries, methods, Damping())
    for name in methods:
        row = report["methods"][name]
        assert -1.0 <= row["cosine"] <= 1.0
        assert 0.0 <= row["rel_error_scaled"] <= 1.0
        assert -1.0 <= row["spearman"]["mean"] <= 1.0
        assert row["rel_error"] >= 0.0
    assert report["methods"]["lissa"]["rel_error"] < 1e-5
    assert report["methods"]["cg"]["rel_error"] < 1e-6
    assert report["methods"]["gradsim"]["rel_error"] > 1e-3


def test_methods_without_preconditioned_vectors_are_rejected():
    train, queries = _features()
    for bad in ("repsim", "gradcos", "tracin", "nope"):
        with pytest.raises(ConfigError):
            compare_ihvp(train, queries, [bad])


def test_mean_spearman_skips_constant_rows():
    scores = torch.tensor([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]])
    ref = torch.tensor([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
    out = mean_spearman(scores, ref)
    assert out["mean"] == pytest.approx(-1.0) and out["n_used"] == 1 and out["n_query"] == 2


def test_run_on_the_tiny_fine_tune_writes_json_and_png(tiny_finetune, tmp_path):
    ft = tiny_finetune
    methods = ("exact", "gradsim", "datainf", "lissa-paper", "kfac")
    report = run_ihvp_error(ft.loaded, ft.train, ft.queries, tmp_path, methods=methods)
    assert (tmp_path / "ihvp_error.png").read_bytes()[:4] == b"\x89PNG"
    saved = read_json(tmp_path / "ihvp_error.json")
    assert list(saved["methods"]) == list(methods)
    assert len(saved["blocks"]) == 8  # q_proj, v_proj × lora_A, lora_B × 2 layers
    assert saved["methods"]["exact"]["rel_error"] == pytest.approx(0.0, abs=1e-12)
    assert saved["methods"]["exact"]["spearman"]["mean"] == pytest.approx(1.0)
    for name in methods:
        row = report["methods"][name]
        assert set(row["blocks"]) == set(saved["blocks"])
        assert -1.0 <= row["cosine"] <= 1.0
        assert row["spearman"]["n_used"] == len(ft.queries)
    # lissa-paper is ≈ 4·gradsim (3 small steps): same direction, same ranking
    lp, gs = report["methods"]["lissa-paper"], report["methods"]["gradsim"]
    assert lp["cosine"] == pytest.approx(gs["cosine"], abs=1e-2)


class _NegatedExact(Exact):
    """exact's iHVP times −1: the direction reversed, so its ranking is exact's upside down."""

    name = "negated-exact"

    def precondition(self, block, queries, train, damping):
        return -super().precondition(block, queries, train, damping)


def test_a_reversed_ihvp_scores_the_worst_rescaled_error_not_zero(monkeypatch):
    monkeypatch.setitem(registry._REGISTRY, _NegatedExact.name, _NegatedExact)
    train, queries = _features(2)
    report = compare_ihvp(train, queries, ["exact", "negated-exact"], Damping())
    row = report["methods"]["negated-exact"]
    assert row["cosine"] == pytest.approx(-1.0, abs=1e-12)
    assert row["rel_error"] == pytest.approx(2.0, abs=1e-9)
    assert row["rel_error_scaled"] == pytest.approx(1.0)  # √(1 − cos²) alone would say 0
    assert row["spearman"]["mean"] == pytest.approx(-1.0)
    for block in ("wide", "narrow"):
        assert row["blocks"][block]["rel_error_scaled"] == pytest.approx(1.0)
    assert report["methods"]["exact"]["rel_error_scaled"] == pytest.approx(0.0, abs=1e-6)


def test_positive_rescaled_error_is_the_best_nonnegative_scale():
    # brute force min over c ≥ 0 of ‖c u − x‖ / ‖x‖ for pairs at several angles
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(6, dtype=torch.float64, generator=gen)
    other = torch.randn(6, dtype=torch.float64, generator=gen)
    other -= (other @ x) / (x @ x) * x  # ⟂ x
    grid = torch.linspace(0.0, 5.0, 50_001, dtype=torch.float64)
    for angle in (0.0, 0.3, 1.2, math.pi / 2, 2.0, 3.0, math.pi):
        u = math.cos(angle) * x / x.norm() + math.sin(angle) * other / other.norm()
        cos = (u @ x) / (u.norm() * x.norm())
        brute = float(((grid[:, None] * u - x).norm(dim=1) / x.norm()).min())
        assert float(positive_rescaled_error(cos)) == pytest.approx(brute, abs=1e-4)
    assert positive_rescaled_error(torch.tensor([-1.0, -0.2, 0.0, 1.0])).tolist() == [
        1.0,
        1.0,
        1.0,
        0.0,
    ]
