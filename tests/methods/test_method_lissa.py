from __future__ import annotations

import json
import warnings

import pytest
import torch

from attriblm.errors import ConfigError
from attriblm.methods import create_method
from attriblm.methods.lissa import lissa_coefficients, lissa_dense


def test_converged_lissa_matches_exact(features, rel_err):
    train, queries = features
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # must converge without warning
        u, info = create_method("lissa").preconditioned(train, queries)
    exact, _ = create_method("exact").preconditioned(train, queries)
    assert info["converged"] and not info["not_converged_blocks"]
    for block in exact:
        assert rel_err(u[block], exact[block]) < 1e-3, block
        assert rel_err(u[block], exact[block]) < 1e-5, block  # in practice much smaller
        facts = info["blocks"][block]
        assert facts["converged"] and facts["relative_change"] < 1e-9
        assert facts["iterations"] > 1
    paths = {b["path"].split()[0] for b in info["blocks"].values()}
    assert paths == {"coefficient", "dense"}  # the fixture has blocks wider and narrower than n
    json.dumps(info, allow_nan=False)


def test_scores_match_exact(features):
    train, queries = features
    lissa = create_method("lissa").score(train, queries).scores.double()
    exact = create_method("exact").score(train, queries).scores.double()
    assert float((lissa - exact).norm() / exact.norm()) < 1e-5


def test_sigma_is_scale_factor_times_top_eigenvalue(features):
    train, queries = features
    info = create_method("lissa", scale_factor=1.5).score(train, queries).info
    for block, g in train.grads.items():
        g = g.double()
        mu = torch.linalg.eigvalsh(g.T @ g / g.shape[0])[-1].item()
        lam = info["lambda"][block]
        assert info["blocks"][block]["top_eigenvalue"] == pytest.approx(mu, rel=1e-9)
        assert info["blocks"][block]["sigma"] == pytest.approx(1.5 * (mu + lam), rel=1e-9)


def _d_space_loop(v, g, lam, sigma, steps):
    """The recursion written out: u_t = v + (I − (H + λI)/σ) u_{t−1}, u_0 = v."""
    n, d = g.shape
    h = g.T @ g / n + lam * torch.eye(d, dtype=torch.float64)
    u = v.clone()
    for _ in range(steps):
        u = v + u - u @ h / sigma
    return u


@pytest.mark.parametrize("n,d", [(10, 30), (20, 8)])
def test_coefficient_space_gives_the_same_iterates(n, d):
    gen = torch.Generator().manual_seed(5)
    g = torch.randn(2, n, d, generator=gen, dtype=torch.float64)
    v = torch.randn(2, 3, d, generator=gen, dtype=torch.float64)
    lam = torch.tensor([0.05, 0.2], dtype=torch.float64)
    mu = torch.stack([torch.linalg.eigvalsh(gb.T @ gb / n)[-1] for gb in g])
    sigma = 1.1 * (mu + lam)
    steps = 40  # tol is unreachable, so both run exactly `steps` iterations
    u_dense, its_d, _, conv_d = lissa_dense(v, g, lam, sigma, tol=1e-300, max_iter=steps)
    a, c, its_c, _, conv_c = lissa_coefficients(
        v @ g.transpose(1, 2),
        g @ g.transpose(1, 2),
        v.square().sum(2),
        lam,
        sigma,
        tol=1e-300,
        max_iter=steps,
    )
    u_coef = a[:, None, None] * v + torch.bmm(c, g)
    assert its_d.tolist() == its_c.tolist() == [steps, steps]
    assert not conv_d.any() and not conv_c.any()
    for b in range(2):
        ref = _d_space_loop(v[b], g[b], lam[b].item(), sigma[b].item(), steps)
        torch.testing.assert_close(u_dense[b], ref, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(u_coef[b], ref, rtol=1e-10, atol=1e-12)


def test_paths_agree_through_the_method(features, rel_err):
    train, queries = features
    u_dense, i_dense = create_method("lissa", path="dense").preconditioned(train, queries)
    u_coef, i_coef = create_method("lissa", path="coefficient").preconditioned(train, queries)
    for block in u_dense:
        assert rel_err(u_coef[block], u_dense[block]) < 1e-7, block
        its = (i_dense["blocks"][block]["iterations"], i_coef["blocks"][block]["iterations"])
        assert abs(its[0] - its[1]) <= 1, (block, its)  # same stopping step up to rounding


def test_non_convergence_is_flagged_and_warned(features):
    with pytest.warns(RuntimeWarning, match="did not converge"):
        info = create_method("lissa", max_iter=3).score(*features).info
    assert info["converged"] is False
    assert set(info["not_converged_blocks"]) == set(features[0].grads)
    assert all(b["iterations"] == 3 and not b["converged"] for b in info["blocks"].values())
    assert info["max_relative_change"] > 1e-9


def test_zero_query_converges_to_zero(features):
    train, queries = features
    queries.grads = {b: v.clone() for b, v in queries.grads.items()}
    for v in queries.grads.values():
        v[0] = 0.0
    u, info = create_method("lissa").preconditioned(train, queries)
    assert info["converged"]
    assert all(torch.equal(ub[0], torch.zeros_like(ub[0])) for ub in u.values())


@pytest.mark.parametrize(
    "opts", [{"tol": 0.0}, {"max_iter": 0}, {"scale_factor": 0.4}, {"path": "sideways"}]
)
def test_bad_options(opts):
    with pytest.raises(ConfigError):
        create_method("lissa", **opts)
