"""Stateless numerical primitives on one gradient block.

Notation (docs/DESIGN.md §2-3): ``G`` is a block's train gradient matrix ``[n, d]``
(row ``i`` = ``g_i``),
``H = GᵀG / n`` its empirical Fisher, ``λ > 0`` the block's damping. Query vectors are the rows of
``V [m, d]``; every function here treats the rows independently ("batched over queries") and
returns rows in the same order. Callers pass float64 tensors; nothing here changes dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


def top_eigenvalue(g: Tensor) -> float:
    """Largest eigenvalue of ``H = GᵀG / n`` for ``G [n, d]``.

    Computed exactly (``eigvalsh``) from whichever Gram matrix is smaller: ``GGᵀ/n`` (``n×n``,
    same non-zero spectrum) when ``d > n``, else ``GᵀG/n`` (``d×d``).
    """
    n, d = g.shape
    gram = g @ g.T if d > n else g.T @ g
    return float(torch.linalg.eigvalsh(gram / n)[-1].clamp_min(0.0))


def fisher_matvec(g: Tensor, x: Tensor, damping: float) -> Tensor:
    """``(H + λI) x`` for each row ``x [m, d]`` (as ``x (GᵀG/n) + λ x``, never forming ``H``)."""
    return (x @ g.T) @ g / g.shape[0] + damping * x


def fisher_operator(g: Tensor, damping: float) -> Callable[[Tensor], Tensor]:
    """The map ``X [m, d] → X (H + λI)``, using an explicit ``d×d`` ``H`` when ``d ≤ n``."""
    n, d = g.shape
    if d <= n:
        h = g.T @ g / n
        h.diagonal().add_(damping)
        return lambda x: x @ h
    return lambda x: fisher_matvec(g, x, damping)


def relative_residual(g: Tensor, x: Tensor, v: Tensor, damping: float) -> Tensor:
    """``‖(H + λI) x − v‖ / ‖v‖`` per row ``[m]`` (0 where ``v`` is 0 and so is the residual)."""
    res = (fisher_matvec(g, x, damping) - v).norm(dim=1)
    vn = v.norm(dim=1)
    return torch.where(vn > 0, res / vn.clamp_min(torch.finfo(v.dtype).tiny), res)


def _spd_solve(a: Tensor, b: Tensor) -> tuple[Tensor, str]:
    """Solve ``a x = b`` for symmetric positive definite ``a``: Cholesky, LU if that fails."""
    chol, info = torch.linalg.cholesky_ex(a)
    if int(info) == 0:
        return torch.cholesky_solve(b, chol), "cholesky"
    return torch.linalg.solve(a, b), "lu (cholesky failed: matrix numerically not SPD)"


def woodbury_solve(g: Tensor, v: Tensor, damping: float) -> tuple[Tensor, str]:
    """``(GᵀG/n + λI)⁻¹ vᵀ`` for rows ``v [m, d]`` via the Woodbury identity.

    ``(GᵀG/n + λI)⁻¹ v = (1/λ) (v − Gᵀ (nλI + GGᵀ)⁻¹ G v)``: one ``n×n`` Cholesky solve, cheap
    when ``d > n``. Returns ``([m, d], factorisation used)``.
    """
    n = g.shape[0]
    a = g @ g.T
    a.diagonal().add_(n * damping)
    y, how = _spd_solve(a, g @ v.T)  # [n, m]
    return (v - y.T @ g) / damping, how


def dense_solve(g: Tensor, v: Tensor, damping: float) -> tuple[Tensor, str]:
    """``(GᵀG/n + λI)⁻¹ vᵀ`` for rows ``v [m, d]`` by a ``d×d`` Cholesky solve (for ``d ≤ n``)."""
    n, d = g.shape
    a = g.T @ g / n
    a.diagonal().add_(damping)
    x, how = _spd_solve(a, v.T)
    return x.T, how


def damped_fisher_solve(g: Tensor, v: Tensor, damping: float) -> tuple[Tensor, str]:
    """Exact ``(H + λI)⁻¹ v`` per row: Woodbury when ``d > n``, else a dense ``d×d`` solve.

    Returns ``([m, d], description of the path taken)``.
    """
    n, d = g.shape
    if d > n:
        x, how = woodbury_solve(g, v, damping)
        return x, f"woodbury (n×n {how})"
    x, how = dense_solve(g, v, damping)
    return x, f"dense (d×d {how})"


@dataclass
class CGResult:
    """Outcome of :func:`conjugate_gradient`.

    Attributes:
        x: ``[m, d]`` solutions, one per right-hand-side row.
        iterations: iterations run (until the last row converged, or ``max_iter``).
        residuals: ``[m]`` true relative residuals ``‖b − A x‖ / ‖b‖`` at the end.
        converged: every row reached the recursive relative residual ``< tol``.
    """

    x: Tensor
    iterations: int
    residuals: Tensor
    converged: bool

    @property
    def residual(self) -> float:
        """The largest final relative residual over rows."""
        return float(self.residuals.max()) if self.residuals.numel() else 0.0


def conjugate_gradient(
    matvec: Callable[[Tensor], Tensor],
    b: Tensor,
    *,
    tol: float = 1e-10,
    max_iter: int = 1000,
) -> CGResult:
    """Conjugate gradients for ``A x = b`` with symmetric positive definite ``A``, per row of b.

    ``matvec`` maps ``[m, d] → [m, d]`` (row-wise ``A x``). Each row is its own CG run (its own
    step sizes); a row stops updating once its recursive residual satisfies
    ``‖r‖ / ‖b‖ < tol`` (a zero row of ``b`` gives ``x = 0`` at once).
    """
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rr = (r * r).sum(dim=1)
    bnorm = b.norm(dim=1)
    thresh = tol * bnorm
    done = (rr.sqrt() < thresh) | (bnorm == 0)
    iterations = 0
    while iterations < max_iter and not bool(done.all()):
        ap = matvec(p)
        pap = (p * ap).sum(dim=1)
        alpha = torch.where(done | (pap <= 0), torch.zeros_like(rr), rr / pap)
        x = x + alpha[:, None] * p
        r = r - alpha[:, None] * ap
        rr_new = (r * r).sum(dim=1)
        iterations += 1
        done = done | (rr_new.sqrt() < thresh)
        beta = torch.where(done, torch.zeros_like(rr), rr_new / rr)
        p = r + beta[:, None] * p
        rr = rr_new
    true_res = (b - matvec(x)).norm(dim=1)
    safe = bnorm.clamp_min(torch.finfo(b.dtype).tiny)
    residuals = torch.where(bnorm > 0, true_res / safe, true_res)
    return CGResult(x=x, iterations=iterations, residuals=residuals, converged=bool(done.all()))
