from __future__ import annotations

import pytest
import torch

from attriblm.errors import ConfigError
from attriblm.methods import create_method


def test_direct_matches_dense_solve_on_both_branches(features, dense_inverse, rel_err):
    train, queries = features
    u, info = create_method("exact").preconditioned(train, queries)
    for block, g in train.grads.items():
        lam = info["lambda"][block]
        ref = dense_inverse(g, queries.grads[block], lam)
        assert u[block].dtype == torch.float64
        assert rel_err(u[block], ref) < 1e-8, block
        wide = g.shape[1] > g.shape[0]
        assert info["blocks"][block]["path"].startswith("woodbury" if wide else "dense")
        assert info["blocks"][block]["residual"] < 1e-10
    assert {b["path"].split()[0] for b in info["blocks"].values()} == {"woodbury", "dense"}


def test_scores_sum_blocks(features, dense_inverse):
    train, queries = features
    out = create_method("exact").score(train, queries)
    ref = torch.zeros(queries.n, train.n, dtype=torch.float64)
    for block, g in train.grads.items():
        lam = out.info["lambda"][block]
        ref += dense_inverse(g, queries.grads[block], lam) @ g.double().T
    assert out.scores.shape == (queries.n, train.n)
    assert out.scores.dtype == torch.float32
    torch.testing.assert_close(
        out.scores, ref.float(), rtol=1e-5, atol=1e-6 * ref.abs().max().item()
    )


def test_cg_matches_direct(features, rel_err):
    train, queries = features
    direct, _ = create_method("exact").preconditioned(train, queries)
    cg, info = create_method("exact", solver="cg").preconditioned(train, queries)
    for block in direct:
        assert rel_err(cg[block], direct[block]) < 1e-6, block
        assert info["blocks"][block]["converged"]
        assert info["blocks"][block]["iterations"] >= 1
        assert info["blocks"][block]["residual"] < 1e-8
    assert info["converged"] and info["options"]["solver"] == "cg"


def test_cg_non_convergence_warns(features):
    with pytest.warns(RuntimeWarning, match="did not reach"):
        out = create_method("exact", solver="cg", max_iter=1).score(*features)
    assert out.info["converged"] is False


def test_bad_solver():
    with pytest.raises(ConfigError, match="solver"):
        create_method("exact", solver="qr")
