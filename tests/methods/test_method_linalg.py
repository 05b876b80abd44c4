from __future__ import annotations

import pytest
import torch

from attriblm.methods.linalg import (
    conjugate_gradient,
    damped_fisher_solve,
    dense_solve,
    fisher_matvec,
    fisher_operator,
    relative_residual,
    top_eigenvalue,
    woodbury_solve,
)

GEN = torch.Generator().manual_seed(11)


def _g(n, d):
    return torch.randn(n, d, generator=GEN, dtype=torch.float64)


@pytest.mark.parametrize("n,d", [(12, 40), (40, 12), (15, 15)])
def test_top_eigenvalue_matches_dense_h(n, d):
    g = _g(n, d)
    h = g.T @ g / n
    assert top_eigenvalue(g) == pytest.approx(torch.linalg.eigvalsh(h)[-1].item(), rel=1e-12)


@pytest.mark.parametrize("n,d", [(12, 40), (40, 12)])
def test_solves_match_dense_solve(n, d, dense_inverse, rel_err):
    g, v, lam = _g(n, d), _g(3, d), 0.07
    ref = dense_inverse(g, v, lam)
    assert rel_err(woodbury_solve(g, v, lam)[0], ref) < 1e-10
    assert rel_err(dense_solve(g, v, lam)[0], ref) < 1e-10
    x, how = damped_fisher_solve(g, v, lam)
    assert rel_err(x, ref) < 1e-10
    assert how.startswith("woodbury" if d > n else "dense")
    assert relative_residual(g, x, v, lam).max() < 1e-10


@pytest.mark.parametrize("n,d", [(12, 40), (40, 12)])
def test_fisher_operator_is_h_plus_lambda(n, d):
    g, x, lam = _g(n, d), _g(4, d), 0.3
    ref = x @ (g.T @ g / n + lam * torch.eye(d, dtype=torch.float64))
    torch.testing.assert_close(fisher_operator(g, lam)(x), ref)
    torch.testing.assert_close(fisher_matvec(g, x, lam), ref)


def test_cg_solves_spd_system_row_by_row():
    a = _g(30, 30)
    a = a @ a.T + 0.5 * torch.eye(30, dtype=torch.float64)
    b = _g(4, 30)
    b[2] = 0.0  # a zero right-hand side stays exactly zero
    res = conjugate_gradient(lambda x: x @ a, b, tol=1e-12, max_iter=500)
    ref = torch.linalg.solve(a, b.T).T
    assert res.converged
    assert torch.equal(res.x[2], torch.zeros(30, dtype=torch.float64))
    assert float((res.x - ref).norm() / ref.norm()) < 1e-9
    assert res.residual < 1e-10


def test_cg_reports_non_convergence():
    a = torch.diag(torch.logspace(0, 6, 50, dtype=torch.float64))
    res = conjugate_gradient(lambda x: x @ a, _g(2, 50), tol=1e-12, max_iter=3)
    assert not res.converged
    assert res.iterations == 3
    assert res.residual > 1e-6
