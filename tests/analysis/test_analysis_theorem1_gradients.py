"""Theorem 1 on gradient vectors: literal dense inverses, range vs null-space queries, tiny run."""

from __future__ import annotations

import pytest
import torch

from attriblm.analysis.theorem1 import run_theorem1
from attriblm.analysis.theorem1_gradients import gradient_errors, range_basis
from attriblm.io import read_json
from attriblm.methods.base import FeatureSet
from attriblm.methods.damping import Damping

LAM = 0.05


def _literal(g: torch.Tensor, v: torch.Tensor, lam: float) -> tuple[torch.Tensor, float]:
    """Per-row ``‖x − v/λ‖/‖x‖`` with a dense inverse, and the matrix error, float64."""
    g, v = g.double(), v.double()
    d = g.shape[1]
    inverse = torch.linalg.inv(g.T @ g / g.shape[0] + lam * torch.eye(d, dtype=torch.float64))
    x = v @ inverse
    vector = (x - v / lam).norm(dim=1) / x.norm(dim=1)
    eye = torch.eye(d, dtype=torch.float64) / lam
    matrix = float(torch.linalg.matrix_norm(inverse - eye) / torch.linalg.matrix_norm(inverse))
    return vector, matrix


def _features() -> tuple[FeatureSet, FeatureSet, dict[str, torch.Tensor]]:
    """Train gradients (a wide block, d > n, and a narrow one); queries: a train-row
    combination (in range(H)), a vector ⊥ range(H) (wide block only) and a random one."""
    gen = torch.Generator().manual_seed(0)
    train = {"wide": torch.randn(8, 20, generator=gen), "narrow": torch.randn(8, 4, generator=gen)}
    queries = {}
    for b, g in train.items():
        in_range = torch.randn(8, generator=gen) @ g
        random = torch.randn(g.shape[1], generator=gen)
        _, basis = range_basis(g)
        null = random.double() - basis @ (basis.T @ random.double())
        queries[b] = torch.stack([in_range, null.float(), random])
    return FeatureSet(grads=train), FeatureSet(grads=queries), train


def test_range_basis_matches_the_eigendecomposition():
    gen = torch.Generator().manual_seed(1)
    g = torch.randn(5, 12, generator=gen, dtype=torch.float64)
    g = torch.cat([g, g[:2]])  # 7 rows, rank 5
    eigenvalues, basis = range_basis(g)
    assert eigenvalues.numel() == 5 and basis.shape == (12, 5)
    assert torch.allclose(basis.T @ basis, torch.eye(5, dtype=torch.float64), atol=1e-12)
    h = g.T @ g / 7
    top = torch.linalg.eigvalsh(h)[-5:]
    assert torch.allclose(eigenvalues.sort().values, top, rtol=1e-10)
    assert torch.allclose(basis @ (basis.T @ g.T), g.T, atol=1e-10)  # rows lie in the range
    assert range_basis(torch.zeros(3, 4))[0].numel() == 0


def test_vector_errors_match_dense_inverses_and_separate_range_from_null_space():
    train_f, query_f, train = _features()
    report = gradient_errors(train_f, query_f, Damping("absolute", LAM))
    per_query_sq = torch.zeros(3, dtype=torch.float64)
    x_sq = torch.zeros(3, dtype=torch.float64)
    for b, g in train.items():
        vector, matrix = _literal(g, query_f.grads[b], LAM)
        row = report["blocks"][b]
        assert row["lambda"] == LAM and row["d"] == g.shape[1]
        assert row["rank"] == min(g.shape)
        assert row["matrix_error"] == pytest.approx(matrix, rel=1e-8)
        assert row["error"] == pytest.approx(float(vector.mean()), rel=1e-6)
        inverse = torch.linalg.inv(
            g.double().T @ g.double() / 8 + LAM * torch.eye(g.shape[1], dtype=torch.float64)
        )
        x = query_f.grads[b].double() @ inverse
        per_query_sq += (x - query_f.grads[b].double() / LAM).square().sum(1)
        x_sq += x.square().sum(1)
    overall = (per_query_sq / x_sq).sqrt()
    assert report["per_query"]["error"] == pytest.approx(overall.tolist(), rel=1e-6)
    assert report["queries_summary"]["error_mean"] == pytest.approx(float(overall.mean()), rel=1e-6)
    wide = report["blocks"]["wide"]
    # the in-range query is far from v/λ, the null-space one equals it: the matrix error sits
    # between them
    v = query_f.grads["wide"]
    vector, matrix = _literal(train["wide"], v, LAM)
    assert float(vector[0]) > 1.0 > matrix
    assert float(vector[1]) == pytest.approx(0.0, abs=1e-6)
    assert 0.0 < wide["range_share"] < 1.0
    shares = report["per_query"]["range_share"]
    assert shares[0] == pytest.approx(1.0, abs=1e-6)
    # the null-space query of the narrow block (d < n) is not null: H is full rank there
    assert report["blocks"]["narrow"]["range_share"] == pytest.approx(1.0, abs=1e-6)
    assert report["queries_summary"]["n_used"] == 3
    assert -1.0 <= report["queries_summary"]["cosine_mean"] <= 1.0


def test_run_with_a_tiny_fine_tune_adds_the_gradient_section(tiny_finetune, tmp_path):
    ft = tiny_finetune
    report = run_theorem1(
        tmp_path,
        dims=(32,),
        ranks=(1 / 8, 1 / 4),
        dampings=(0.1, 1.0),
        loaded=ft.loaded,
        train=ft.train,
        queries=ft.queries,
    )
    saved = read_json(tmp_path / "theorem1.json")
    assert (tmp_path / "theorem1.png").read_bytes()[:4] == b"\x89PNG"
    gradients = saved["gradients"]
    assert gradients == report["gradients"]
    assert len(gradients["blocks"]) == 8 and gradients["n_query"] == len(ft.queries)
    summary = gradients["queries_summary"]
    assert summary["n_used"] == len(ft.queries)
    assert 0.0 <= summary["range_share_mean"] <= 1.0 + 1e-9
    assert summary["error_min"] <= summary["error_mean"] <= summary["error_max"]
    for row in gradients["blocks"].values():
        assert 1 <= row["rank"] <= min(row["d"], len(ft.train))
        assert row["lambda"] > 0 and row["matrix_error"] >= 0
