"""LiSSA run to convergence (``lissa``): the corrected counterpart of ``lissa-paper``.

Per block, with ``H = GᵀG/n`` (empirical Fisher), damping ``λ`` and scale
``σ = scale_factor · (μ_max(H) + λ)``:

    u_0 = v,    u_t = v + (I − (H + λI)/σ) u_{t−1},

until ``‖u_t − u_{t−1}‖ / ‖u_t‖ < tol`` for every query of the block (or ``max_iter``). The
fixed point is ``u* = σ (H + λI)⁻¹ v``, so the preconditioned vector is ``u_T / σ`` and
``s = (u_T/σ) · g``. The error contracts by ``1 − λ/σ`` per step in the directions ``H`` does not
see, so small ``λ/μ_max`` means many iterations; a block that stops at ``max_iter`` is flagged
(``converged: false``) and a warning is issued.

Three exact implementations of the same iteration (same iterates in exact arithmetic, so the
same stopping step up to round-off):

* **dense** (``d ≤ n``, or ``path="dense"``): iterate ``u ∈ R^{m×d}`` directly.
* **coefficient** (``path="coefficient"``): every iterate lies in ``span{v} + rowspace(G)``, so
  write ``u_t = a_t v + Gᵀ c_t`` (scalar ``a_t``, ``c_t ∈ R^n``). With ``ρ = 1 − λ/σ``,
  ``w = G v`` and ``K = G Gᵀ``, substituting into the recursion gives ``a_t = 1 + ρ a_{t−1}`` and
  ``c_t = ρ c_{t−1} − (a_{t−1} w + K c_{t−1}) / (σ n)`` (``a_0 = 1``, ``c_0 = 0``), and
  ``‖u_t − u_{t−1}‖² = Δa² ‖v‖² + 2 Δa (Δc · w) + Δcᵀ K Δc`` (likewise ``‖u_t‖²``). One step
  costs ``O(m n²)``; ``u_T = a_T v + Gᵀ c_T`` is formed once at the end.
* **eigen** (``d > n``, or ``path="eigen"``): the coefficient iteration in the eigenbasis of
  ``K = Q diag(κ) Qᵀ`` (float64 ``eigh``, ``κ`` clamped at 0). With ``c̃ = Qᵀ c`` and
  ``w̃ = Qᵀ w`` it is diagonal, ``c̃_t = (ρ − κ/(σ n)) ⊙ c̃_{t−1} − (a_{t−1}/(σ n)) w̃``, so
  ``c̃_t = φ_t ⊙ w̃`` with one scalar sequence per eigenvector, shared by all queries:
  ``φ_t = (ρ − κ/(σ n)) ⊙ φ_{t−1} − a_{t−1}/(σ n)``, ``φ_0 = 0``. The norms become
  ``‖u_t − u_{t−1}‖² = Δa² ‖v‖² + Σ_k w̃_k² Δφ_k (2 Δa + κ_k Δφ_k)`` (likewise ``‖u_t‖²`` with
  ``a_t, φ_t``). A step costs ``O(n)`` for ``(a, φ)``; the ``O(m n)`` norms are evaluated
  after a chunk of steps, for all its steps at once (one batched matrix product), and only at
  its last step while that shows the criterion cannot have been met in the chunk (see
  :func:`lissa_eigen`). The reported step is still the first one that meets the criterion,
  and its iterate is the one returned, ``u_T = a_T v + Gᵀ Q (φ_T ⊙ w̃)``.

All queries of a block, and all blocks on the same path and width (eigen: all blocks, as they
share ``n``), are iterated together; each block stops on its own criterion.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from attriblm.errors import ConfigError
from attriblm.methods.base import PreconditionedGradientMethod
from attriblm.methods.damping import Damping
from attriblm.methods.linalg import top_eigenvalue
from attriblm.methods.registry import register

PATHS = ("auto", "dense", "coefficient", "eigen")

State = dict[str, Tensor]
Update = Callable[[State, State], tuple[State, Tensor]]


def _max_relative(delta_norm: Tensor, norm: Tensor) -> Tensor:
    """``max_q ‖Δu_q‖ / ‖u_q‖`` per block (``[B, m] → [B]``); 0/0 counts as 0 (a zero query)."""
    rel = torch.where(
        norm > 0,
        delta_norm / norm.clamp_min(torch.finfo(norm.dtype).tiny),
        torch.where(delta_norm > 0, torch.inf, 0.0),
    )
    return rel.amax(dim=1)


def iterate_blocks(
    update: Update, state: State, params: State, *, tol: float, max_iter: int
) -> tuple[State, Tensor, Tensor, Tensor]:
    """Run ``state ← update(state, params)`` for a batch of blocks, each until its ``rel < tol``.

    Every tensor in ``state`` and ``params`` has the block as its leading dimension; ``update``
    returns the new state and ``rel [B]``. A converged block is frozen (removed from the batch).
    Returns ``(final state, iterations [B], final rel [B], converged [B])``.
    """
    n_blocks = next(iter(state.values())).shape[0]
    final = {k: torch.empty_like(v) for k, v in state.items()}
    iterations = torch.zeros(n_blocks, dtype=torch.long)
    rel_out = torch.full((n_blocks,), torch.inf, dtype=torch.float64)
    converged = torch.zeros(n_blocks, dtype=torch.bool)
    active = torch.arange(n_blocks)
    rel = torch.full((n_blocks,), torch.inf, dtype=torch.float64)
    t = 0
    while active.numel() > 0 and t < max_iter:
        t += 1
        state, rel = update(state, params)
        done = (rel < tol).cpu()
        if bool(done.any()):
            idx = active[done]
            for k, v in state.items():
                final[k][idx] = v[done]
            iterations[idx] = t
            rel_out[idx] = rel[done].double().cpu()
            converged[idx] = True
            keep = ~done
            active = active[keep]
            state = {k: v[keep] for k, v in state.items()}
            params = {k: v[keep] for k, v in params.items()}
            rel = rel[keep]
    if active.numel() > 0:
        for k, v in state.items():
            final[k][active] = v
        iterations[active] = t
        rel_out[active] = rel.double().cpu()
    return final, iterations, rel_out, converged


def _dense_update(state: State, p: State) -> tuple[State, Tensor]:
    u = state["u"]
    if "h" in p:
        hu = torch.bmm(u, p["h"])
    else:  # d > n forced onto the dense path: H u = Gᵀ(G u)/n without forming H
        g = p["g"]
        hu = torch.bmm(torch.bmm(u, g.transpose(1, 2)), g) / g.shape[1]
    u_new = p["v"] + p["rho"][:, None, None] * u - hu / p["sigma"][:, None, None]
    rel = _max_relative((u_new - u).norm(dim=2), u_new.norm(dim=2))
    return {"u": u_new}, rel


def lissa_dense(
    v: Tensor, g: Tensor, damping: Tensor, sigma: Tensor, *, tol: float, max_iter: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Converged-LiSSA iterates in d-space for a batch of blocks.

    Args:
        v: ``[B, m, d]`` query gradients. g: ``[B, n, d]`` train gradients.
        damping, sigma: ``[B]`` λ and σ per block.

    Returns ``(u_T [B, m, d] (not divided by σ), iterations [B], rel [B], converged [B])``.
    """
    n, d = g.shape[1], g.shape[2]
    params: State = {"v": v, "rho": 1.0 - damping / sigma, "sigma": sigma}
    if d <= n:
        params["h"] = torch.bmm(g.transpose(1, 2), g) / n
    else:
        params["g"] = g
    final, its, rel, conv = iterate_blocks(
        _dense_update, {"u": v.clone()}, params, tol=tol, max_iter=max_iter
    )
    return final["u"], its, rel, conv


def _coefficient_update(state: State, p: State) -> tuple[State, Tensor]:
    a, c, kc = state["a"], state["c"], state["kc"]
    rho, sigma, w, k, vv = p["rho"], p["sigma"], p["w"], p["k"], p["vv"]
    n = k.shape[1]
    a_new = 1.0 + rho * a
    c_new = rho[:, None, None] * c - (a[:, None, None] * w + kc) / (sigma[:, None, None] * n)
    kc_new = torch.bmm(c_new, k)  # K symmetric: (K cᵀ)ᵀ = c K; reused by the next step
    da = (a_new - a)[:, None]
    dc = c_new - c
    delta_sq = da * da * vv + 2 * da * (dc * w).sum(dim=2) + (dc * (kc_new - kc)).sum(dim=2)
    a2 = a_new[:, None]
    norm_sq = a2 * a2 * vv + 2 * a2 * (c_new * w).sum(dim=2) + (c_new * kc_new).sum(dim=2)
    rel = _max_relative(delta_sq.clamp_min(0).sqrt(), norm_sq.clamp_min(0).sqrt())
    return {"a": a_new, "c": c_new, "kc": kc_new}, rel


def lissa_coefficients(
    w: Tensor,
    k: Tensor,
    vv: Tensor,
    damping: Tensor,
    sigma: Tensor,
    *,
    tol: float,
    max_iter: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Converged-LiSSA iterates in coefficient space, ``u_t = a_t v + Gᵀ c_t``.

    Args:
        w: ``[B, m, n]`` = ``v G ᵀ`` (``w_{qi} = v_q · g_i``). k: ``[B, n, n]`` = ``G Gᵀ``.
        vv: ``[B, m]`` = ``‖v_q‖²``. damping, sigma: ``[B]``.

    Returns ``(a_T [B], c_T [B, m, n], iterations [B], rel [B], converged [B])``; the iterate is
    ``u_T = a_T v + c_T G`` (not divided by σ).
    """
    n_blocks = w.shape[0]
    state: State = {
        "a": torch.ones(n_blocks, dtype=w.dtype, device=w.device),
        "c": torch.zeros_like(w),
        "kc": torch.zeros_like(w),
    }
    params: State = {"rho": 1.0 - damping / sigma, "sigma": sigma, "w": w, "k": k, "vv": vv}
    final, its, rel, conv = iterate_blocks(
        _coefficient_update, state, params, tol=tol, max_iter=max_iter
    )
    return final["a"], final["c"], its, rel, conv


def _chunk_relative(xs: Tensor, w2: Tensor, kappa: Tensor, vv: Tensor) -> Tensor:
    """``max_q ‖u_t − u_{t−1}‖ / ‖u_t‖`` for every step of a chunk of eigen-path states.

    ``xs [k+1, B, n+1]`` holds ``(φ_t, a_t)`` for steps ``t0 … t0+k``; ``w2 = w̃² [B, m, n]``,
    ``kappa [B, n]``, ``vv [B, m]``. Returns ``[B, k]`` for steps ``t0+1 … t0+k``.
    """
    k, n = xs.shape[0] - 1, xs.shape[2] - 1
    new = xs[1:]
    dx = new - xs[:-1]
    a, da = new[..., n:], dx[..., n:]  # [k, B, 1]
    phi, dphi = new[..., :n], dx[..., :n]
    # Σ_k w̃_k² · h_k with h = Δφ (2Δa + κ Δφ) (change) and φ (2a + κ φ) (iterate)
    h = torch.cat([dphi * (2 * da + kappa * dphi), phi * (2 * a + kappa * phi)])
    quad = torch.bmm(w2, h.permute(1, 2, 0))  # [B, m, 2k]
    scal = torch.cat([da, a]).square().permute(1, 2, 0)  # [B, 1, 2k]
    sq = (quad + scal * vv[:, :, None]).clamp_min_(0).sqrt_()
    return _max_relative(sq[..., :k], sq[..., k:])


def lissa_eigen(
    w_rot: Tensor,
    kappa: Tensor,
    vv: Tensor,
    damping: Tensor,
    sigma: Tensor,
    *,
    tol: float,
    max_iter: int,
    chunk: int | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Converged-LiSSA iterates in the eigenbasis of ``K = G Gᵀ = Q diag(κ) Qᵀ``.

    The state per block is ``(φ_t [n], a_t)`` (module docstring); ``c̃_t = φ_t ⊙ w̃`` for every
    query. Steps run in chunks of ``chunk`` (default: up to 256, fewer for very large batches).
    When every multiplier ``ρ − κ/(σn)`` of a block is ≥ 0 (``scale_factor ≥ 1``), ``‖Δu_t‖``
    is non-increasing and ``‖u_t‖`` non-decreasing in ``t`` (exact arithmetic), so the relative
    change is non-increasing: it is evaluated at the end of each chunk, and at every step of the
    chunk only where that value is below ``2·tol`` or did not decrease since the previous chunk
    (round-off dominates); the margin covers round-off. Otherwise every step is evaluated. Each
    block keeps the state of the first step whose relative change is below ``tol``.

    Args:
        w_rot: ``[B, m, n]`` = ``w̃ = (v Gᵀ) Q``. kappa: ``[B, n]`` eigenvalues of ``K`` (≥ 0), in
            the order of the columns of ``Q``. vv: ``[B, m]`` = ``‖v_q‖²``. damping, sigma: ``[B]``.

    Returns ``(a_T [B], φ_T [B, n], iterations [B], rel [B], converged [B])``; the iterate is
    ``u_T = a_T v + ((φ_T ⊙ w̃) Qᵀ) G`` (not divided by σ).
    """
    n_blocks, _, n = w_rot.shape
    dtype, device = w_rot.dtype, w_rot.device
    if chunk is None:
        chunk = max(8, min(256, (1 << 22) // (n_blocks * (n + 1))))
    # One step on x = [φ, a] is x_t = e + x_{t−1}[:, n] · coup + x_{t−1} ⊙ mult:
    # φ_t = (ρ − κ/(σn)) φ_{t−1} − a_{t−1}/(σn) and a_t = 1 + ρ a_{t−1}.
    rho = (1.0 - damping / sigma)[:, None]
    inv_sn = (1.0 / (sigma * n))[:, None]
    zero = torch.zeros(n_blocks, 1, dtype=dtype, device=device)
    mult = torch.cat([rho - kappa * inv_sn, rho], dim=1)
    coup = torch.cat([(-inv_sn).expand(n_blocks, n), zero], dim=1)
    e = torch.cat([torch.zeros_like(kappa), zero + 1.0], dim=1)
    x = e.clone()  # φ_0 = 0, a_0 = 1
    w2 = w_rot.square()
    monotone = (mult >= 0).all(dim=1)
    rel_prev = torch.full((n_blocks,), torch.inf, dtype=dtype, device=device)

    final = torch.empty_like(x)
    iterations = torch.zeros(n_blocks, dtype=torch.long)
    rel_out = torch.full((n_blocks,), torch.inf, dtype=torch.float64)
    converged = torch.zeros(n_blocks, dtype=torch.bool)
    active = torch.arange(n_blocks)
    xs: Tensor | None = None
    t = 0
    while active.numel() > 0 and t < max_iter:
        k = min(chunk, max_iter - t)
        if xs is None or xs.shape[1] != x.shape[0]:
            xs = x.new_empty(chunk + 1, *x.shape)
            steps, a_prev = xs.unbind(0), xs[:, :, n:].unbind(0)
        xs[0] = x
        for j in range(k):  # two in-place ops per step, no synchronisation
            torch.addcmul(e, a_prev[j], coup, out=steps[j + 1])
            steps[j + 1].addcmul_(steps[j], mult)
        rel_end = _chunk_relative(xs[k - 1 : k + 1], w2, kappa, vv)[:, 0]
        full = (~monotone | (rel_end < 2 * tol) | (rel_end >= rel_prev)).nonzero().squeeze(1)
        hit = torch.zeros_like(monotone)
        step = torch.full_like(active, k - 1).to(device)  # 0-based step in chunk
        rel_step = rel_end.clone()
        if full.numel() > 0:
            rel = _chunk_relative(xs[: k + 1, full], w2[full], kappa[full], vv[full])  # [F, k]
            met = rel < tol
            hit_f = met.any(dim=1)
            step_f = torch.where(hit_f, met.to(torch.uint8).argmax(dim=1), k - 1)
            hit[full], step[full] = hit_f, step_f
            rel_step[full] = rel.gather(1, step_f[:, None])[:, 0]
        stop = hit | (t + k >= max_iter)
        if bool(stop.any()):
            rows = stop.nonzero().squeeze(1)
            idx = active[rows.cpu()]
            final[idx] = xs[step[rows] + 1, rows]
            iterations[idx] = t + 1 + step[rows].cpu()
            rel_out[idx] = rel_step[rows].double().cpu()
            converged[idx] = hit[rows].cpu()
            keep = ~stop
            active = active[keep.cpu()]
            x = xs[k][keep]
            mult, coup, e, w2, kappa = mult[keep], coup[keep], e[keep], w2[keep], kappa[keep]
            vv, monotone, rel_end = vv[keep], monotone[keep], rel_end[keep]
        else:
            x = xs[k].clone()
        rel_prev = rel_end
        t += k
    return final[:, n], final[:, :n], iterations, rel_out, converged


@register
class Lissa(PreconditionedGradientMethod):
    """``lissa``: LiSSA iterated to convergence, ``s = (u_T/σ) · g``; ``[m, n]`` float32.

    See the module docstring for the recursion, the stopping rule and the three exact
    implementations. Options: ``tol`` (relative change, default 1e-9), ``max_iter`` (default
    100000), ``scale_factor`` (σ = scale_factor · top eigenvalue of ``H + λI``, default 1.1) and
    ``path`` (``auto``: eigen when ``d > n``, else dense; or ``dense``, ``coefficient``,
    ``eigen`` for every block). Per block, info reports σ, the top eigenvalue of ``H``,
    iterations, the final relative change and ``converged``.
    """

    name = "lissa"
    summary = "LiSSA iterated to convergence (matches exact; the corrected lissa-paper)"

    def __init__(
        self,
        damping: Damping | None = None,
        tol: float = 1e-9,
        max_iter: int = 100_000,
        scale_factor: float = 1.1,
        path: str = "auto",
    ) -> None:
        super().__init__(damping)
        if not tol > 0:
            raise ConfigError(f"lissa tol must be > 0, got {tol}")
        if int(max_iter) != max_iter or max_iter < 1:
            raise ConfigError(f"lissa max_iter must be an integer ≥ 1, got {max_iter}")
        if not scale_factor > 0.5:
            raise ConfigError(
                f"lissa scale_factor must be > 0.5 (the recursion diverges otherwise; 1.1 is "
                f"the default), got {scale_factor}"
            )
        if path not in PATHS:
            raise ConfigError(f"unknown lissa path '{path}'; available: {', '.join(PATHS)}")
        self.tol = float(tol)
        self.max_iter = int(max_iter)
        self.scale_factor = float(scale_factor)
        self.path = path

    def options(self) -> dict[str, Any]:
        return {
            **super().options(),
            "tol": self.tol,
            "max_iter": self.max_iter,
            "scale_factor": self.scale_factor,
            "path": self.path,
        }

    def _path_for(self, n: int, d: int) -> str:
        if self.path != "auto":
            return self.path
        return "eigen" if d > n else "dense"

    def precondition(self, block: str, queries: Tensor, train: Tensor, damping: float) -> Tensor:
        return self.precondition_blocks({block: train}, {block: queries}, {block: damping})[block]

    def precondition_blocks(
        self, train: dict[str, Tensor], queries: dict[str, Tensor], dampings: dict[str, float]
    ) -> dict[str, Tensor]:
        groups: dict[tuple[str, int], list[str]] = {}
        for b, g in train.items():
            n, d = g.shape
            path = self._path_for(n, d)
            groups.setdefault((path, d if path == "dense" else -1), []).append(b)
        out: dict[str, Tensor] = {}
        for (path, _), blocks in groups.items():
            if path == "coefficient":
                out.update(self._run_coefficient(blocks, train, queries, dampings))
            elif path == "eigen":
                out.update(self._run_eigen(blocks, train, queries, dampings))
            else:
                out.update(self._run_dense(blocks, train, queries, dampings))
        return {b: out[b] for b in train}

    def _scales(self, blocks: list[str], mu: list[float], dampings: dict[str, float]):
        lam = torch.tensor([dampings[b] for b in blocks], dtype=torch.float64)
        mu_t = torch.tensor(mu, dtype=torch.float64)
        return lam, self.scale_factor * (mu_t + lam), mu_t

    def _record_all(self, blocks, path, mu, sigma, its, rel, conv) -> None:
        for i, b in enumerate(blocks):
            self.record(
                b,
                path=path,
                top_eigenvalue=float(mu[i]),
                sigma=float(sigma[i]),
                iterations=int(its[i]),
                relative_change=float(rel[i]),
                converged=bool(conv[i]),
            )

    def _run_dense(self, blocks, train, queries, dampings) -> dict[str, Tensor]:
        g = torch.stack([train[b].double() for b in blocks])
        v = torch.stack([queries[b].to(device=g.device, dtype=torch.float64) for b in blocks])
        mu = [top_eigenvalue(g[i]) for i in range(len(blocks))]
        lam, sigma, mu_t = self._scales(blocks, mu, dampings)
        lam, sigma = lam.to(g.device), sigma.to(g.device)
        u, its, rel, conv = lissa_dense(v, g, lam, sigma, tol=self.tol, max_iter=self.max_iter)
        self._record_all(blocks, "dense (d-space)", mu_t, sigma, its, rel, conv)
        return {b: u[i] / sigma[i] for i, b in enumerate(blocks)}

    def _run_coefficient(self, blocks, train, queries, dampings) -> dict[str, Tensor]:
        ks, ws, vvs, mu = [], [], [], []
        for b in blocks:
            g = train[b].double()
            v = queries[b].to(device=g.device, dtype=torch.float64)
            k = g @ g.T
            ks.append(k)
            ws.append(v @ g.T)
            vvs.append(v.square().sum(dim=1))
            mu.append(float(torch.linalg.eigvalsh(k / g.shape[0])[-1].clamp_min(0.0)))
        k, w, vv = torch.stack(ks), torch.stack(ws), torch.stack(vvs)
        del ks, ws, vvs
        lam, sigma, mu_t = self._scales(blocks, mu, dampings)
        lam, sigma = lam.to(k.device), sigma.to(k.device)
        a, c, its, rel, conv = lissa_coefficients(
            w, k, vv, lam, sigma, tol=self.tol, max_iter=self.max_iter
        )
        self._record_all(blocks, "coefficient ((n+1)-dim)", mu_t, sigma, its, rel, conv)
        out = {}
        for i, b in enumerate(blocks):
            g = train[b].double()
            v = queries[b].to(device=g.device, dtype=torch.float64)
            out[b] = (a[i] * v + c[i] @ g) / sigma[i]
        return out

    def _run_eigen(self, blocks, train, queries, dampings) -> dict[str, Tensor]:
        qs, kappas, ws, vvs = [], [], [], []
        for b in blocks:
            g = train[b].double()
            v = queries[b].to(device=g.device, dtype=torch.float64)
            kappa, q = torch.linalg.eigh(g @ g.T)
            qs.append(q)
            kappas.append(kappa.clamp_min(0.0))  # round-off can make κ slightly negative
            ws.append((v @ g.T) @ q)
            vvs.append(v.square().sum(dim=1))
        kappa, w_rot, vv = torch.stack(kappas), torch.stack(ws), torch.stack(vvs)
        del kappas, ws, vvs
        n = w_rot.shape[2]
        mu = (kappa[:, -1] / n).tolist()
        lam, sigma, mu_t = self._scales(blocks, mu, dampings)
        lam, sigma = lam.to(kappa.device), sigma.to(kappa.device)
        a, phi, its, rel, conv = lissa_eigen(
            w_rot, kappa, vv, lam, sigma, tol=self.tol, max_iter=self.max_iter
        )
        self._record_all(blocks, "eigen ((n+1)-dim, diagonal)", mu_t, sigma, its, rel, conv)
        out = {}
        for i, b in enumerate(blocks):
            g = train[b].double()
            v = queries[b].to(device=g.device, dtype=torch.float64)
            c = (w_rot[i] * phi[i]) @ qs[i].T
            out[b] = (a[i] * v + c @ g) / sigma[i]
        return out

    def summarize(self, blocks: dict[str, dict[str, Any]]) -> dict[str, Any]:
        bad = [name for name, b in blocks.items() if not b["converged"]]
        worst = max(blocks, key=lambda name: blocks[name]["relative_change"])
        if bad:
            warnings.warn(
                f"lissa: {len(bad)} of {len(blocks)} blocks did not converge within "
                f"max_iter={self.max_iter} (largest relative change "
                f"{blocks[worst]['relative_change']:.3g} > tol {self.tol:g}, block '{worst}'); "
                "scores are not the converged values, see info['blocks']",
                RuntimeWarning,
                stacklevel=3,
            )
        return {
            "converged": not bad,
            "not_converged_blocks": bad,
            "max_iterations": max(b["iterations"] for b in blocks.values()),
            "max_relative_change": blocks[worst]["relative_change"],
        }
