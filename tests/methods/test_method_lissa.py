from __future__ import annotations

import json
import warnings

import pytest
import torch

from attriblm.errors import ConfigError
from attriblm.methods import create_method
from attriblm.methods.lissa import lissa_coefficients, lissa_dense, lissa_eigen


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
    assert paths == {"eigen", "dense"}  # the fixture has blocks wider and narrower than n
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


def _small_case(n, d, seed=5, blocks=2, m=3, scale=1.1):
    """Low-rank-plus-noise blocks (d > n in the callers) with σ from the exact top eigenvalue."""
    gen = torch.Generator().manual_seed(seed)
    basis = torch.randn(blocks, 3, d, generator=gen, dtype=torch.float64)
    g = torch.randn(blocks, n, 3, generator=gen, dtype=torch.float64) @ basis
    g += 0.1 * torch.randn(blocks, n, d, generator=gen, dtype=torch.float64)
    v = torch.randn(blocks, m, 3, generator=gen, dtype=torch.float64) @ basis
    v += 0.1 * torch.randn(blocks, m, d, generator=gen, dtype=torch.float64)
    lam = 0.1 * g.square().mean(dim=(1, 2))
    mu = torch.stack([torch.linalg.eigvalsh(gb @ gb.T / n)[-1] for gb in g])
    return g, v, lam, scale * (mu + lam)


def _run_all_paths(g, v, lam, sigma, *, tol, max_iter, chunk=None):
    """``u_T`` and iterations from the dense, coefficient and eigen paths."""
    u_dense, its_d, rel_d, conv_d = lissa_dense(v, g, lam, sigma, tol=tol, max_iter=max_iter)
    k = g @ g.transpose(1, 2)
    w = v @ g.transpose(1, 2)
    vv = v.square().sum(2)
    a, c, its_c, rel_c, conv_c = lissa_coefficients(
        w, k, vv, lam, sigma, tol=tol, max_iter=max_iter
    )
    u_coef = a[:, None, None] * v + torch.bmm(c, g)
    kappa, q = torch.linalg.eigh(k)
    a, phi, its_e, rel_e, conv_e = lissa_eigen(
        w @ q, kappa.clamp_min(0), vv, lam, sigma, tol=tol, max_iter=max_iter, chunk=chunk
    )
    u_eig = a[:, None, None] * v + torch.bmm(torch.bmm((w @ q) * phi[:, None], q.mT), g)
    return {
        "dense": (u_dense, its_d, rel_d, conv_d),
        "coefficient": (u_coef, its_c, rel_c, conv_c),
        "eigen": (u_eig, its_e, rel_e, conv_e),
    }


@pytest.mark.parametrize("n,d", [(10, 30), (16, 50), (20, 8)])
def test_eigen_path_gives_the_same_iterates_for_fixed_steps(n, d):
    g, v, lam, sigma = _small_case(n, d)
    steps = 300  # tol is unreachable, so every path runs exactly `steps` iterations
    out = _run_all_paths(g, v, lam, sigma, tol=1e-300, max_iter=steps, chunk=64)
    for _, its, _, conv in out.values():
        assert its.tolist() == [steps, steps] and not conv.any()
    for b in range(2):
        ref = _d_space_loop(v[b], g[b], lam[b].item(), sigma[b].item(), steps)
        for path, (u, *_) in out.items():
            assert float((u[b] - ref).norm() / ref.norm()) < 1e-10, path


@pytest.mark.parametrize(
    "n,d,tol,scale",
    # tol 1e-10 cases took ~1.5 min each (the dense and coefficient paths step in Python) and
    # test nothing the 1e-9 cases do not.
    [(10, 30, 1e-9, 1.1), (16, 50, 1e-9, 0.7)],
)
def test_eigen_coefficient_and_dense_stop_at_the_same_step(n, d, tol, scale, dense_inverse):
    """Same stopping step and iterate on every path (scale < 1: multipliers < 0, no screen)."""
    g, v, lam, sigma = _small_case(n, d, seed=n, scale=scale)
    out = _run_all_paths(g, v, lam, sigma, tol=tol, max_iter=100_000)
    u_ref, its_ref, rel_ref, _ = out["dense"]
    for path, (u, its, rel, conv) in out.items():
        assert conv.all(), path
        assert its.tolist() == its_ref.tolist(), path
        assert (rel < tol).all()
        torch.testing.assert_close(rel, rel_ref, rtol=1e-3, atol=1e-13)  # cancellation in ‖Δu‖²
        for b in range(2):
            assert float((u[b] - u_ref[b]).norm() / u_ref[b].norm()) < 1e-10, (path, b)
    u_eig = out["eigen"][0]
    for b in range(2):
        exact = dense_inverse(g[b], v[b], lam[b].item())
        assert float((u_eig[b] / sigma[b] - exact).norm() / exact.norm()) < 1e-6


@pytest.mark.parametrize("chunk", [1, 7, 300])
def test_eigen_chunking_keeps_the_first_step_meeting_tol(chunk):
    """The chunk length changes nothing: same stopping step, same iterate, to the last bit."""
    g, v, lam, sigma = _small_case(12, 40, seed=3, blocks=3)
    g[2] *= 1e-3  # blocks on different scales stop at different steps
    v[2] *= 1e-3
    k = g @ g.transpose(1, 2)
    kappa, q = torch.linalg.eigh(k)
    args = ((v @ g.transpose(1, 2)) @ q, kappa.clamp_min(0), v.square().sum(2), lam, sigma)
    ref = lissa_eigen(*args, tol=1e-9, max_iter=100_000, chunk=1)
    got = lissa_eigen(*args, tol=1e-9, max_iter=100_000, chunk=chunk)
    for r, x in zip(ref, got, strict=True):
        assert torch.equal(r, x)
    # max_iter not a multiple of the chunk: every block stops exactly at max_iter
    a, phi, its, rel, conv = lissa_eigen(*args, tol=1e-300, max_iter=23, chunk=chunk)
    a1, phi1, *_ = lissa_eigen(*args, tol=1e-300, max_iter=23, chunk=1)
    assert its.tolist() == [23, 23, 23] and not conv.any() and (rel > 0).all()
    assert torch.equal(a, a1) and torch.equal(phi, phi1)


def test_eigen_path_matches_exact_through_the_method(make_features, rel_err):
    widths = {"a": 40, "b": 64, "c": 100}  # all wider than n = 24
    train, queries = make_features(seed=2, widths=widths)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        u_eig, info = create_method("lissa").preconditioned(train, queries)
    u_coef, i_coef = create_method("lissa", path="coefficient").preconditioned(train, queries)
    u_dense, i_dense = create_method("lissa", path="dense").preconditioned(train, queries)
    exact, _ = create_method("exact").preconditioned(train, queries)
    for block in widths:
        facts = info["blocks"][block]
        assert facts["path"].startswith("eigen") and facts["converged"]
        its = {facts["iterations"], i_coef["blocks"][block]["iterations"]}
        its.add(i_dense["blocks"][block]["iterations"])
        assert len(its) == 1, (block, its)
        assert rel_err(u_eig[block], u_coef[block]) < 1e-10, block
        assert rel_err(u_eig[block], u_dense[block]) < 1e-10, block
        assert rel_err(u_eig[block], exact[block]) < 1e-6, block


def test_paths_agree_through_the_method(features, rel_err):
    train, queries = features
    run = {p: create_method("lissa", path=p, tol=1e-7) for p in ("dense", "coefficient", "eigen")}
    u_dense, i_dense = run["dense"].preconditioned(train, queries)
    u_coef, i_coef = run["coefficient"].preconditioned(train, queries)
    u_eig, i_eig = run["eigen"].preconditioned(train, queries)
    for block in u_dense:
        assert rel_err(u_coef[block], u_dense[block]) < 1e-7, block
        assert rel_err(u_eig[block], u_dense[block]) < 1e-7, block
        its = [i["blocks"][block]["iterations"] for i in (i_dense, i_coef, i_eig)]
        assert max(its) - min(its) <= 1, (block, its)  # same stopping step up to rounding


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
