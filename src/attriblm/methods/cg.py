"""Conjugate-gradient iHVP: ``(H_b + λ_b I)⁻¹ v`` per block by CG, with a residual report."""

from __future__ import annotations

from attriblm.methods.damping import Damping
from attriblm.methods.exact import Exact
from attriblm.methods.registry import register


@register
class CG(Exact):
    """``s = (u_b · g)`` summed over blocks, ``u_b`` from CG on ``(H_b + λ_b I) u = v``.

    ``H_b = GᵀG/n`` is applied matrix-free when the block is wider than ``n``. CG is batched over
    queries and stops per query when the relative residual is ``< tol``, or after ``max_iter``
    iterations (default ``10·(min(n, d) + 1)``). ``info["blocks"][b]`` reports ``iterations``,
    ``converged`` and the true final ``residual`` ``max_q ‖(H + λI)u − v‖ / ‖v‖``; a block that
    did not converge raises a RuntimeWarning. Same scores as ``exact`` up to the tolerance.
    """

    name = "cg"
    summary = "conjugate-gradient (H + λI)⁻¹v per block (tolerance, iteration cap, residual)"

    def __init__(
        self, damping: Damping | None = None, tol: float = 1e-10, max_iter: int | None = None
    ) -> None:
        super().__init__(damping, solver="cg", tol=tol, max_iter=max_iter)
