"""Theorem 1 simulation: closed form = explicit matrices, error ≤ bound, monotone in r/n and λ."""

from __future__ import annotations

import math

import pytest
import torch

from attriblm.analysis.theorem1 import (
    closed_form_errors,
    explicit_vectors,
    random_orthonormal,
    random_spectrum,
    run_theorem1,
    simulated_errors,
    vector_errors,
)
from attriblm.errors import ConfigError
from attriblm.io import read_json


def _literal_errors(u: torch.Tensor, s: torch.Tensor, lam: float) -> tuple[float, float]:
    """The definitions, literally: dense inverse of U diag(s) Uᵀ + λI (float64)."""
    n = u.shape[0]
    eye = torch.eye(n, dtype=torch.float64)
    inverse = torch.linalg.inv((u * s) @ u.T + lam * eye)
    diff = torch.linalg.matrix_norm(inverse - eye / lam)
    return float(diff / torch.linalg.matrix_norm(inverse)), float(
        diff / torch.linalg.norm(eye / lam)
    )


@pytest.mark.parametrize(
    ("n", "r", "lam"), [(40, 1, 0.1), (40, 10, 0.1), (64, 32, 0.01), (64, 7, 3)]
)
def test_closed_form_equals_explicit_matrices(n, r, lam):
    gen = torch.Generator().manual_seed(n + r)
    s = random_spectrum(r, gen)
    u = random_orthonormal(n, r, gen)
    assert torch.allclose(u.T @ u, torch.eye(r, dtype=torch.float64), atol=1e-12)
    assert bool((s > 0).all()) and bool((s <= 1).all())
    closed = closed_form_errors(s, n, lam)
    sim = simulated_errors(u, s, lam)
    literal, literal_id = _literal_errors(u, s, lam)
    assert closed["error"] == pytest.approx(literal, rel=1e-9)
    assert sim["error"] == pytest.approx(literal, rel=1e-9)
    assert closed["error_vs_identity"] == pytest.approx(literal_id, rel=1e-9)
    assert sim["error_vs_identity"] == pytest.approx(literal_id, rel=1e-9)
    assert closed["error"] <= closed["bound"] + 1e-12
    assert closed["error_vs_identity"] <= closed["bound_vs_identity"] + 1e-12
    assert closed["bound_vs_identity"] <= math.sqrt(r / n)


@pytest.mark.parametrize(("n", "r", "lam"), [(40, 4, 0.1), (30, 15, 0.01), (24, 3, 2.0)])
def test_vector_errors_closed_form_equals_dense_inverse(n, r, lam):
    gen = torch.Generator().manual_seed(10 * n + r)
    s = random_spectrum(r, gen)
    u = random_orthonormal(n, r, gen)
    coords = torch.randn(1, r, generator=gen, dtype=torch.float64).repeat(5, 1)  # same c
    perp_sq = torch.tensor([0.0, 0.5, 1.0, 4.0, 30.0], dtype=torch.float64)
    v = explicit_vectors(u, coords, perp_sq, gen)
    assert torch.allclose(u.T @ v, coords.T, atol=1e-12)
    assert torch.allclose((v - u @ (u.T @ v)).square().sum(0), perp_sq, atol=1e-10)
    inverse = torch.linalg.inv((u * s) @ u.T + lam * torch.eye(n, dtype=torch.float64))
    x = inverse @ v
    literal = (x - v / lam).norm(dim=0) / x.norm(dim=0)
    closed = vector_errors(s, coords, perp_sq, lam)
    assert torch.allclose(closed, literal, rtol=1e-9)
    (simulated,) = simulated_errors(u, s, lam, [v])["vector_errors"]
    assert torch.allclose(simulated, literal, rtol=1e-9)
    # in range(H) (no null-space part) the error is a weighted mean of s_i/λ
    assert s.min() / lam - 1e-9 <= closed[0] <= s.max() / lam + 1e-9
    assert closed.tolist() == sorted(closed.tolist(), reverse=True)  # a null part shrinks it


def test_bound_is_tight_when_spectrum_dominates_damping():
    # s ≫ λ: t → 1 and the error approaches √(r/(n−r)), above √(r/n)
    n, r = 100, 20
    closed = closed_form_errors(torch.full((r,), 1e6, dtype=torch.float64), n, 1e-3)
    assert closed["error"] == pytest.approx(math.sqrt(r / (n - r)), rel=1e-6)
    assert closed["error"] > math.sqrt(r / n)


def test_run_writes_json_and_png_and_obeys_the_theorem(tmp_path):
    report = run_theorem1(tmp_path, dims=(32, 96), ranks=(1 / 32, 1 / 8, 1 / 4, 1 / 2), seed=3)
    assert (tmp_path / "theorem1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = read_json(tmp_path / "theorem1.json")
    assert saved["rank_sweep"] == report["rank_sweep"]
    assert report["all_within_bound"] and report["monotone_in_rank"]
    assert report["max_abs_diff_closed_vs_simulated"] < 1e-12
    assert report["n_simulated_rows"] == len(report["rank_sweep"]) + len(report["lambda_sweep"])
    for n in (32, 96):
        rows = [r for r in report["rank_sweep"] if r["n"] == n]
        errors = [r["error"] for r in rows]
        assert errors == sorted(errors) and len(set(errors)) == len(errors)  # falls as r/n falls
        assert all(r["error"] <= r["bound"] for r in rows)
        lam_rows = [r for r in report["lambda_sweep"] if r["n"] == n]
        lam_errors = [r["error"] for r in sorted(lam_rows, key=lambda r: r["lambda"])]
        assert lam_errors == sorted(lam_errors, reverse=True)  # falls as λ grows
    # the smallest ratio is small: error well below the largest ratio's
    first, last = report["rank_sweep"][0], report["rank_sweep"][3]
    assert first["error"] < 0.5 * last["error"]
    # on vectors: isotropic ones see about the matrix error, vectors in range(H) far more
    assert report["max_rel_diff_vectors_closed_vs_simulated"] < 1e-10
    assert report["gradients"] is None
    for row in report["rank_sweep"] + report["lambda_sweep"]:
        assert row["vector_error_range"] > 2 * row["vector_error_random"]
        assert row["vector_error_range"] >= row["vector_error_range_min"]
        assert row["vector_error_random"] <= row["vector_error_random_max"]
    for row in report["rank_sweep"]:
        assert row["vector_error_range"] > 1.0 > row["vector_error_random"]
    lam_rows = sorted(
        (r for r in report["lambda_sweep"] if r["n"] == 96), key=lambda r: r["lambda"]
    )
    in_range = [r["vector_error_range"] for r in lam_rows]
    assert in_range == sorted(in_range, reverse=True)  # ∝ 1/λ for small λ


def test_default_dims_include_2048_with_spot_check(tmp_path):
    report = run_theorem1(tmp_path)
    big = [r for r in report["rank_sweep"] if r["n"] == 2048]
    assert len(big) == 7
    checked = [r for r in big + report["lambda_sweep"] if r["n"] == 2048 and r["error_simulated"]]
    assert len(checked) == 2  # the spot check appears in both sweeps
    assert all(abs(r["error"] - r["error_simulated"]) < 1e-12 for r in checked)
    assert all(
        r["vector_error_range"] == pytest.approx(r["vector_error_range_simulated"], rel=1e-10)
        for r in checked
    )
    assert all(r["vector_error_range_simulated"] is None for r in big if r not in checked)
    assert report["all_within_bound"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ranks": (1.5,)},
        {"ranks": (0.0,)},
        {"dims": (1,)},
        {"damping": 0.0},
        {"dampings": (-1.0,)},
        {"sweep_ratio": 1.0},
        {"n_vectors": 0},
        {"train": []},
    ],
)
def test_bad_input_is_a_config_error(tmp_path, kwargs):
    with pytest.raises(ConfigError):
        run_theorem1(tmp_path, **{"dims": (16,), **kwargs})
    assert not (tmp_path / "theorem1.json").exists()
