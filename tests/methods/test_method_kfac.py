"""K-FAC / EK-FAC against exact linear algebra.

Exactness case (one token per example): per-example gradients ``G_i = δ_i a_iᵀ`` over a full
factorial design (every input ``a_j`` paired with every output gradient ``δ_k``, one example per
pair). Then ``H = (1/n) Σ_i vec(G_i) vec(G_i)ᵀ = S ⊗ A`` holds *exactly* (not only in
expectation), so K-FAC is the exact block Fisher and EK-FAC's fitted ``Λ = diag(Qᵀ H Q)`` equals
the Kronecker eigenvalues: both must equal the exact damped solve ``(H + λI)⁻¹ v``.
"""

from __future__ import annotations

import pytest
import torch

from attriblm.errors import ConfigError
from attriblm.features.kfac import factors_from_tokens
from attriblm.methods import Damping, FeatureSet, create_method
from attriblm.methods.kfac import load_eigen_factors

D_IN, D_OUT = 5, 3


def _factorial(seed: int, j: int = 7, k: int = 6, m: int = 4):
    gen = torch.Generator().manual_seed(seed)
    a_j = torch.randn(j, D_IN, generator=gen, dtype=torch.float64)
    d_k = torch.randn(k, D_OUT, generator=gen, dtype=torch.float64)
    a = a_j.repeat_interleave(k, dim=0)  # example i = (j, k): one token each
    d = d_k.repeat(j, 1)
    factors, grads = factors_from_tokens(a, d, torch.arange(j * k))
    v = torch.randn(m, D_OUT * D_IN, generator=gen, dtype=torch.float64)
    return factors, grads, v


def _multi_token(seed: int, n: int = 12, tokens: int = 4, m: int = 3, shared: float = 0.0):
    """Several tokens per example, two blocks: the generic (inexact) case.

    ``shared``: weight of a per-example component common to all of its tokens (tokens of one
    sequence are alike), which makes the cross-token terms K-FAC drops large.
    """
    gen = torch.Generator().manual_seed(seed)
    train, kfac, queries = {}, {}, {}
    for b, (o, i) in {"l0.lora_A": (2, 6), "l0.lora_B": (6, 2)}.items():
        a = torch.randn(n * tokens, i, generator=gen, dtype=torch.float64)
        d = torch.randn(n * tokens, o, generator=gen, dtype=torch.float64)
        a += shared * torch.randn(n, i, generator=gen, dtype=torch.float64).repeat_interleave(
            tokens, dim=0
        )
        d += shared * torch.randn(n, o, generator=gen, dtype=torch.float64).repeat_interleave(
            tokens, dim=0
        )
        kfac[b], train[b] = factors_from_tokens(a, d, torch.arange(n).repeat_interleave(tokens))
        queries[b] = torch.randn(m, o * i, generator=gen, dtype=torch.float64)
    return FeatureSet(grads=train, kfac=kfac), FeatureSet(grads=queries)


def test_factorial_design_is_exactly_kronecker():
    factors, grads, _ = _factorial(0)
    h = grads.T @ grads / grads.shape[0]
    assert torch.allclose(h, torch.kron(factors.S, factors.A), atol=1e-12)


@pytest.mark.parametrize("name", ["kfac", "ekfac"])
@pytest.mark.parametrize("lam", [1e-3, 0.3])
def test_one_token_per_example_matches_exact_block_solve(name, lam, dense_inverse, rel_err):
    factors, grads, v = _factorial(1)
    train = FeatureSet(grads={"b": grads}, kfac={"b": factors})
    u, info = create_method(name, damping=Damping("absolute", lam)).preconditioned(
        train, FeatureSet(grads={"b": v})
    )
    assert rel_err(u["b"], dense_inverse(grads, v, lam)) < 1e-10
    assert info["lambda"] == {"b": lam}


@pytest.mark.parametrize("lam", [1e-3, 0.3])
def test_multi_token_kfac_is_the_solve_of_the_dense_kronecker_product(lam, rel_err):
    """Several tokens per example: K-FAC = ``(S ⊗ A + λI)⁻¹ v`` built densely, which is not H."""
    train, queries = _multi_token(7, shared=2.0)
    method = create_method("kfac", damping=Damping("absolute", lam))
    u, info = method.preconditioned(train, queries)
    for b, f in train.kfac.items():
        g = train.grads[b]
        kron = torch.kron(f.S, f.A)  # row-major vec of [out, in]
        eye = torch.eye(kron.shape[0], dtype=torch.float64)
        expected = torch.linalg.solve(kron + lam * eye, queries.grads[b].T).T
        assert rel_err(u[b], expected) < 1e-10, b
        h = g.T @ g / g.shape[0]
        assert float((kron - h).norm() / h.norm()) > 0.1  # the cross-token terms are missing
        ratio = float(torch.trace(kron) / torch.trace(h))
        assert info["blocks"][b]["trace_ratio"] == pytest.approx(ratio, rel=1e-10)
        assert ratio < 0.7  # alike tokens: tr(H) gains the cross terms, S ⊗ A does not
    ratios = [b["trace_ratio"] for b in info["blocks"].values()]
    assert info["trace_ratio"] == {"min": min(ratios), "max": max(ratios)}


def test_trace_ratio_is_one_where_the_kronecker_model_keeps_the_trace():
    """One token per example (factorial design): S ⊗ A = H; EK-FAC always keeps tr(H)."""
    factors, grads, v = _factorial(8)
    one_token = FeatureSet(grads={"b": grads}, kfac={"b": factors})
    info = create_method("kfac").preconditioned(one_token, FeatureSet(grads={"b": v}))[1]
    assert info["blocks"]["b"]["trace_ratio"] == pytest.approx(1.0, rel=1e-10)
    train, queries = _multi_token(9)
    info = create_method("ekfac").preconditioned(train, queries)[1]
    assert all(b["trace_ratio"] == pytest.approx(1.0, rel=1e-10) for b in info["blocks"].values())


def test_ekfac_is_the_exact_solve_of_its_eigenbasis_model(rel_err):
    """Generic data: EK-FAC = ``(Q diag(Λ) Qᵀ + λI)⁻¹ v`` with ``Q = Q_S ⊗ Q_A`` (row-major)."""
    train, queries = _multi_token(2)
    fitted = create_method("ekfac", damping=Damping("absolute", 0.05)).fit(train)
    u, _ = fitted.preconditioned(queries)
    for b, ef in fitted.factors.items():
        q = torch.kron(ef.q_s, ef.q_a)
        g = train.grads[b]
        lam_fit = ((g @ q) ** 2).mean(dim=0)  # diag(Qᵀ H Q), H = GᵀG/n
        assert torch.allclose(ef.eigenvalues.flatten(), lam_fit, rtol=1e-10)
        curvature = q @ torch.diag(lam_fit + 0.05) @ q.T
        expected = torch.linalg.solve(curvature, queries.grads[b].T).T
        assert rel_err(u[b], expected) < 1e-10


def test_kfac_and_ekfac_are_finite_deterministic_and_differ():
    train, queries = _multi_token(3)
    outs = {}
    for name in ("kfac", "ekfac"):
        first = create_method(name).score(train, queries)
        again = create_method(name).score(train, queries)
        assert torch.isfinite(first.scores).all()
        assert torch.equal(first.scores, again.scores)
        assert all(lam > 0 for lam in first.info["lambda"].values())
        outs[name] = first.scores
    assert not torch.allclose(outs["kfac"], outs["ekfac"])


def test_eigen_mean_damping(rel_err):
    train, queries = _multi_token(4)
    ekfac = create_method("ekfac", damping=Damping("eigen_mean", 0.1))
    info = ekfac.score(train, queries).info
    for b, g in train.grads.items():
        # mean of the corrected eigenvalues = mean squared gradient entry (orthonormal basis)
        assert info["lambda"][b] == pytest.approx(0.1 * float(g.square().mean()), rel=1e-10)
    kfac = create_method("kfac", damping=Damping("eigen_mean", 0.1))
    info = kfac.score(train, queries).info
    for b, f in train.kfac.items():
        expected = 0.1 * float(
            torch.linalg.eigvalsh(f.S).mean() * torch.linalg.eigvalsh(f.A).mean()
        )
        assert info["lambda"][b] == pytest.approx(expected, rel=1e-8)
    with pytest.raises(ConfigError, match="eigen_mean"):
        create_method("exact", damping=Damping("eigen_mean", 0.1)).score(train, queries)


def test_saved_factors_are_reused(tmp_path):
    train, queries = _multi_token(5)
    fitted = create_method("ekfac").fit(train)
    first = fitted.score(queries)
    path = fitted.save_factors(tmp_path / "ekfac.safetensors")
    loaded = load_eigen_factors(path)
    assert set(loaded) == set(train.kfac)
    no_factors = FeatureSet(grads=train.grads)
    again = create_method("ekfac", factors=path).score(no_factors, queries)
    assert torch.allclose(again.scores, first.scores, rtol=1e-6)


def test_missing_factors_is_a_config_error():
    train, queries = _multi_token(6)
    with pytest.raises(ConfigError, match="K-FAC factors"):
        create_method("kfac").score(FeatureSet(grads=train.grads), queries)
