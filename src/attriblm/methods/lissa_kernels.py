"""LiSSA's iterates in closed form in an eigenbasis of the block's Fisher (kernels of ``lissa``).

The recursion, per block (``H = GᵀG/n``, damping ``λ``, scale ``σ``, ``M = (H + λI)/σ``)::

    u_0 = v,    u_t = v + (I − M) u_{t−1}     ⇒     u_T = Σ_{j=0}^{T} (I − M)^j v,

the truncated Neumann series of ``M⁻¹ v``; its fixed point is ``u* = σ (H + λI)⁻¹ v``. In an
orthonormal eigenbasis ``{p_k}`` of ``H`` (``H p_k = μ_k p_k``) with multipliers
``m_k = (μ_k + λ)/σ`` and query coordinates ``β_k = p_k · v``, every mode is a scalar geometric
series (``ρ_k = 1 − m_k``)::

    p_k · u_T        = ψ_T(m_k) β_k,     ψ_T(m) = Σ_{j≤T} (1 − m)^j = (1 − (1 − m)^{T+1}) / m
    p_k · u*         = β_k / m_k
    p_k · (u_T − u*) = −ρ_k^{T+1} β_k / m_k
    p_k · (v − M u_T) = ρ_k^{T+1} β_k                     (the residual)

so ``u_T`` for any ``T`` costs one weighted sum of the basis vectors, and the relative error of
the iterate is known exactly:
``E(T) = ‖u_T − u*‖ / ‖u*‖ = (Σ_k ρ_k^{2(T+1)} β_k²/m_k²)^{1/2} / (Σ_k β_k²/m_k²)^{1/2}``.
With ``0 < m_k < 2`` (``σ > (μ_max + λ)/2``) every ``|ρ_k| < 1``, so ``E`` is non-increasing
in ``T`` and the first ``T`` with ``E(T) ≤ tol`` is found by bisection.

Two bases give the same iterates (exact arithmetic):

* :func:`gram_spectrum` (``d > n``): from ``K = G Gᵀ = Q diag(κ) Qᵀ``, the modes
  ``p_k = Gᵀ q_k / √κ_k`` (``μ_k = κ_k / n``) and one more mode per query, the part ``v_⊥`` of
  ``v`` outside the row space of ``G`` (``μ = 0``, multiplier ``λ/σ``: the slowest one).
* :func:`dense_spectrum` (``d ≤ n``): ``H = P diag(μ) Pᵀ`` directly (``d`` modes).

Everything is float64 on the inputs' device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Spectrum:
    """One block's LiSSA problem in an eigenbasis of ``H``.

    Attributes:
        mu: ``[K]`` eigenvalue of ``H`` per mode (``≥ 0``).
        weights: ``[m, K]`` squared coordinates ``β_{qk}²`` of each query on the modes (row
            ``q`` sums to ``‖v_q‖²``).
        combine: ``ψ [K] → [m, d]``, the vectors ``Σ_k ψ_k β_{qk} p_k`` (``ψ = 1`` gives ``v``).
    """

    mu: Tensor
    weights: Tensor
    combine: Callable[[Tensor], Tensor]

    @property
    def top_eigenvalue(self) -> float:
        """``μ_max`` (0 for an all-zero block)."""
        return float(self.mu.max()) if self.mu.numel() else 0.0

    def multipliers(self, damping: float, sigma: float) -> Tensor:
        """``m_k = (μ_k + λ)/σ`` ``[K]``."""
        return (self.mu + damping) / sigma


def gram_spectrum(g: Tensor, v: Tensor) -> Spectrum:
    """The modes of ``H`` from the ``n×n`` Gram matrix, for ``g [n, d]``, ``v [m, d]`` (``d > n``).

    Eigenvalues of ``K`` at or below ``κ_max · max(n, d) · eps`` are numerically zero: their
    directions count as part of the complement mode ``v_⊥`` (``μ = 0``). ``v_⊥`` is formed in
    ``d``-space, so its weight ``‖v_⊥‖²`` has no cancellation.
    """
    n = g.shape[0]
    kappa, q = torch.linalg.eigh(g @ g.T)
    kappa = kappa.clamp_min(0.0)
    cut = float(kappa.max()) * max(g.shape) * torch.finfo(g.dtype).eps if n else 0.0
    keep = kappa > cut
    kappa, q = kappa[keep], q[:, keep]
    w = (v @ g.T) @ q  # [m, r]: w_qk = v_q · Gᵀq_k = √κ_k β_qk
    coef = w / kappa  # β_qk / √κ_k, the weight of Gᵀq_k
    basis = q.T @ g  # [r, d]: rows Gᵀq_k (norm √κ_k)
    perp = v - coef @ basis
    mu = torch.cat([kappa / n, kappa.new_zeros(1)])
    weights = torch.cat([w.square() / kappa, perp.square().sum(dim=1, keepdim=True)], dim=1)

    def combine(psi: Tensor) -> Tensor:
        # ψ_⊥ v + Σ_k (ψ_k − ψ_⊥) β_k p_k: the row-space part of v is carried by ψ_⊥ v
        return psi[-1] * v + (coef * (psi[:-1] - psi[-1])) @ basis

    return Spectrum(mu=mu, weights=weights, combine=combine)


def dense_spectrum(g: Tensor, v: Tensor) -> Spectrum:
    """The modes of ``H = GᵀG/n`` from its ``d×d`` eigendecomposition (for ``d ≤ n``)."""
    mu, p = torch.linalg.eigh(g.T @ g / g.shape[0])
    beta = v @ p  # [m, d]

    def combine(psi: Tensor) -> Tensor:
        return (beta * psi) @ p.T

    return Spectrum(mu=mu.clamp_min(0.0), weights=beta.square(), combine=combine)


def powers(m: Tensor, e: int) -> Tensor:
    """``(1 − m)^e`` for multipliers ``0 < m < 2``, integer ``e ≥ 1``; accurate for small ``m``.

    ``exp(e · log1p(−m))`` where ``m < 1`` (no rounding of ``1 − m``); ``±(m − 1)^e`` otherwise.
    """
    small = m < 1
    log_small = torch.log1p(-torch.where(small, m, 0.0))
    log_large = torch.log(torch.where(small, 1.0, m) - 1.0)  # −inf at m = 1: (1 − m)^e = 0
    sign = -1.0 if e % 2 else 1.0
    return torch.where(small, torch.exp(e * log_small), sign * torch.exp(e * log_large))


def neumann_sum(m: Tensor, t: int) -> Tensor:
    """``ψ_t(m) = Σ_{j=0}^{t} (1 − m)^j = (1 − (1 − m)^{t+1}) / m`` per multiplier ``[K]``."""
    small = m < 1
    head = -torch.expm1((t + 1) * torch.log1p(-torch.where(small, m, 0.0)))  # 1 − ρ^{t+1}
    return torch.where(small, head, 1.0 - powers(m, t + 1)) / m


def relative_errors(m: Tensor, weights: Tensor, t: int) -> Tensor:
    """``‖u_t − u*‖ / ‖u*‖`` per query ``[m]`` (0 for a zero query, whose iterates are all 0)."""
    scaled = weights / m.square()  # (β/m)², the squared coordinates of u*
    total = scaled.sum(dim=1)
    left = scaled @ powers(m, t + 1).square()
    return torch.where(total > 0, left / total.clamp_min(torch.finfo(total.dtype).tiny), 0.0).sqrt()


def stopping_step(
    m: Tensor, weights: Tensor, *, tol: float, max_iter: int
) -> tuple[int, float, bool]:
    """The first ``T ∈ [0, max_iter]`` with ``max_q E_q(T) ≤ tol`` (bisection; ``E`` monotone).

    Returns ``(T, max_q E_q(T), converged)``; when even ``T = max_iter`` misses ``tol``, returns
    ``(max_iter, E(max_iter), False)``.
    """
    if not bool(((m > 0) & (m < 2)).all()):
        raise ValueError("LiSSA multipliers must lie in (0, 2): σ > (μ_max + λ)/2 and λ > 0")

    def error(t: int) -> float:
        return float(relative_errors(m, weights, t).max()) if weights.numel() else 0.0

    top = error(max_iter)
    if top > tol:
        return max_iter, top, False
    lo, hi, at_hi = -1, max_iter, top  # E(lo) > tol (lo = −1: before any step), E(hi) ≤ tol
    while hi - lo > 1:
        mid = (lo + hi) // 2
        e = error(mid)
        if e <= tol:
            hi, at_hi = mid, e
        else:
            lo = mid
    return hi, at_hi, True
