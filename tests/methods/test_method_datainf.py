from __future__ import annotations

import torch

from attriblm.methods import create_method


def _datainf_loop(v: torch.Tensor, g: torch.Tensor, lam: float) -> torch.Tensor:
    """u = (1/(nλ)) Σ_i ( v − (v·g_i)/(λ + ‖g_i‖²) · g_i ), one term at a time."""
    n = g.shape[0]
    u = torch.zeros_like(v)
    for i in range(n):
        gi = g[i]
        u += (v - (v @ gi) / (lam + gi @ gi) * gi) / (n * lam)
    return u


def test_matches_term_by_term_definition(features, rel_err):
    train, queries = features
    u, info = create_method("datainf").preconditioned(train, queries)
    for block, g in train.grads.items():
        lam = info["lambda"][block]
        for q in range(queries.n):
            ref = _datainf_loop(queries.grads[block][q].double(), g.double(), lam)
            assert rel_err(u[block][q], ref) < 1e-6, (block, q)


def test_scores_are_u_dot_g(features):
    train, queries = features
    out = create_method("datainf").score(train, queries)
    u, _ = create_method("datainf").preconditioned(train, queries)
    ref = sum(u[b] @ g.double().T for b, g in train.grads.items())
    assert out.scores.shape == (queries.n, train.n) and out.scores.dtype == torch.float32
    torch.testing.assert_close(out.scores.double(), ref, rtol=1e-5, atol=1e-6 * ref.abs().max())
