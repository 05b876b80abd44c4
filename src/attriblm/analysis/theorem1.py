"""Theorem 1 (docs/DESIGN.md §7.1): for low-rank ``H``, ``(H + λI)⁻¹`` is close to ``I/λ``.

Simulation. For each dimension ``n`` and rank ``r < n``::

    H = U diag(s) Uᵀ,   U [n, r] orthonormal (QR of a standard Gaussian matrix, float64),
                         s_i = 1 − u_i,  u_i ~ U[0, 1) i.i.d.   (so s_i ∈ (0, 1]: positive, and
                         comparable to the study's λ = 0.1: s_i/λ ∈ (0, 10])

Ranks are nested: for one ``n`` a single ``U`` and ``s`` of the largest rank are drawn and rank
``r`` uses their first ``r`` columns / values, so the curves over ``r/n`` are not jagged by
fresh draws.

Error. ``(H + λI)⁻¹ − I/λ = −(1/λ) H (H + λI)⁻¹``; its eigenvalues are ``−s_i / (λ(s_i + λ))`` on
the ``r`` directions of ``U`` and 0 elsewhere. With ``t_i = s_i / (s_i + λ) ∈ (0, 1)``:

* ``error`` (the reported one) uses the exact inverse's norm as denominator::

      ‖(H+λI)⁻¹ − I/λ‖_F / ‖(H+λI)⁻¹‖_F = √( Σ_i t_i² / (n − r + Σ_i (1 − t_i)²) )
                                          ≤ t_max · √(r / (n − r))  ≤ √(r / (n − r))

  (numerator ``Σ t_i²/λ²``; denominator ``((n − r) + Σ (1 − t_i)²)/λ²`` since
  ``λ/(s_i + λ) = 1 − t_i``). This ``bound`` is exact, not asymptotic; ``≈ √(r/n)`` for
  ``r ≪ n``. ``√(r/n)`` alone is *not* a bound under this denominator when ``s ≫ λ``.
* ``error_vs_identity`` divides by ``‖I/λ‖_F = √n/λ`` instead:
  ``√(Σ_i t_i² / n) ≤ t_max · √(r/n) ≤ √(r/n)`` (``bound_vs_identity``).

Both are exact functions of the spectrum, so ``error`` and ``error_vs_identity`` are reported
from the closed form above. As a self-check the same quantities are computed from explicit
matrices (``*_simulated``): ``H + λI`` is formed densely, Cholesky-factorised in float64, and
``X = (H + λI)⁻¹ U diag(s)`` solved from that factor; then, with ``D = (H+λI)⁻¹ − I/λ
= −(1/λ) X Uᵀ``, ``‖D‖_F = ‖X‖_F / λ``, ``tr D = −tr(Uᵀ X) / λ`` and
``‖(H+λI)⁻¹‖_F² = ‖D‖_F² + 2 tr(D)/λ + n/λ²``. Every row with ``n ≤ simulate_max_n`` is simulated;
above it (one ``O(n³)`` factorisation per row) only the row ``r/n = sweep_ratio``, ``λ = damping``
is, as a spot check. ``max_abs_diff_closed_vs_simulated`` reports the largest disagreement.
The λ sweep uses ``r/n = sweep_ratio``.

Vectors. The matrix error is dominated by the ``n − r`` null-space directions of ``H``, where
``(H + λI)⁻¹`` and ``I/λ`` agree exactly; it says nothing about vectors that live in
``range(H)`` — and every training gradient does (``H = GᵀG/n``), so a score ``xᵀg_i`` only sees
the range part of ``x = (H + λI)⁻¹v``. So each row also reports, for ``n_vectors`` vectors of two
kinds, the mean of ::

    ‖(H+λI)⁻¹v − v/λ‖ / ‖(H+λI)⁻¹v‖ = √( Σ_i c_i² t_i² / (Σ_i c_i² (1 − t_i)² + ‖v⊥‖²) )

with ``c = Uᵀv`` and ``v⊥ = v − Uc``: ``vector_error_random`` for isotropic ``v ~ N(0, I_n)``
(drawn through its coordinates in ``[U, U⊥]``: ``c`` the first ``r`` of ``n`` i.i.d. N(0, 1)
coordinates, ``‖v⊥‖²`` the sum of squares of the rest), and ``vector_error_range`` for ``v = Uz``,
``z ~ N(0, I_r)`` (``v⊥ = 0``: each component's error is ``t_i/(1 − t_i) = s_i/λ``, so the
error lies in ``[s_min/λ, s_max/λ]`` whatever ``r/n``). ``vector_error_random_max`` and
``vector_error_range_min`` are the extremes over the vectors. They come from a second generator
(``seed + 1``), so the matrix rows are the same draws as without them. Simulated rows also solve
explicit vectors (``Uc`` plus a random direction ⊥ ``U`` of norm ``‖v⊥‖``) with the Cholesky
factor; ``max_rel_diff_vectors_closed_vs_simulated`` reports the largest relative disagreement.

Real gradients. With a fine-tuned model and data, :mod:`attriblm.analysis.theorem1_gradients`
measures the same vector error on the model's query gradients (``OUT/theorem1.json``
``"gradients"``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from attriblm.analysis._common import json_float, output_dir, pyplot, save_figure
from attriblm.errors import ConfigError
from attriblm.io import write_json
from attriblm.progress import StageProgress, no_progress

if TYPE_CHECKING:
    from attriblm.data.schema import Example
    from attriblm.models.loading import LoadedModel
    from attriblm.pipeline.attribute import AttributeSettings

NAME = "theorem1"
DEFAULT_RATIOS = (1 / 128, 1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2)
DEFAULT_DAMPINGS = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0, 10.0)
SPECTRUM = "s_i = 1 - u_i, u_i ~ U[0,1) i.i.d. (eigenvalues in (0, 1]); U = QR of N(0,1) [n, r]"
DEFAULT_N_VECTORS = 32
# the report's fixed fields: what is computed and how
_DEFINITIONS: dict[str, str] = {
    "diagnosis": "theorem1",
    "statement": "(H+λI)^-1 - I/λ = -(1/λ) H (H+λI)^-1; relative Frobenius size ≲ √(r/n)",
    "spectrum": SPECTRUM,
    "error_definition": "‖(H+λI)^-1 − I/λ‖_F / ‖(H+λI)^-1‖_F, t = s/(s+λ): "
    "√(Σt² / (n − r + Σ(1−t)²))",
    "bound_definition": "t_max·√(r/(n−r)) (exact bound of `error`)",
    "error_vs_identity_definition": "‖(H+λI)^-1 − I/λ‖_F / ‖I/λ‖_F = √(Σt²/n) ≤ t_max·√(r/n)",
    "vector_error_definition": "‖(H+λI)^-1 v − v/λ‖ / ‖(H+λI)^-1 v‖ = "
    "√(Σc²t² / (Σc²(1−t)² + ‖v⊥‖²)), c = Uᵀv; mean over n_vectors vectors: "
    "random v ~ N(0, I_n) (vector_error_random), v = U z with z ~ N(0, I_r) in range(H) "
    "(vector_error_range)",
    "simulated": "explicit H+λI, float64 Cholesky solve; all rows for n ≤ simulate_max_n, "
    "else the row r/n = sweep_ratio, λ = damping",
}


def random_spectrum(r: int, generator: torch.Generator) -> torch.Tensor:
    """``s [r]`` float64 in ``(0, 1]``: ``1 − u``, ``u ~ U[0, 1)`` i.i.d."""
    return 1.0 - torch.rand(r, generator=generator, dtype=torch.float64)


def random_orthonormal(n: int, r: int, generator: torch.Generator) -> torch.Tensor:
    """``U [n, r]`` float64 with orthonormal columns (QR of a standard Gaussian matrix)."""
    q, _ = torch.linalg.qr(torch.randn(n, r, generator=generator, dtype=torch.float64))
    return q


def closed_form_errors(s: torch.Tensor, n: int, damping: float) -> dict[str, float]:
    """Errors and bounds from the spectrum ``s [r]`` alone (see the module docstring)."""
    r = int(s.numel())
    t = s / (s + damping)
    num = float(t.square().sum())
    den = (n - r) + float((1.0 - t).square().sum())
    t_max = float(t.max()) if r else 0.0
    return {
        "error": math.sqrt(num / den),
        "bound": t_max * math.sqrt(r / (n - r)) if r < n else math.inf,
        "error_vs_identity": math.sqrt(num / n),
        "bound_vs_identity": t_max * math.sqrt(r / n),
    }


def vector_errors(
    s: torch.Tensor, coords: torch.Tensor, perp_sq: torch.Tensor, damping: float
) -> torch.Tensor:
    """``‖(H+λI)⁻¹v − v/λ‖ / ‖(H+λI)⁻¹v‖`` ``[k]`` for ``k`` vectors ``v = U c + v⊥``.

    ``coords [k, r]`` are ``c = Uᵀv`` (the components along ``H``'s eigenvectors, eigenvalues
    ``s [r]``), ``perp_sq [k]`` is ``‖v⊥‖²`` (the null-space part). With ``t = s/(s + λ)``:
    ``√(Σ c² t² / (Σ c² (1 − t)² + ‖v⊥‖²))`` (module docstring).
    """
    t = s / (s + damping)
    c_sq = coords.square()
    num = (c_sq * t.square()).sum(dim=1)
    den = (c_sq * (1.0 - t).square()).sum(dim=1) + perp_sq
    return (num / den).sqrt()


def explicit_vectors(
    u: torch.Tensor, coords: torch.Tensor, perp_sq: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """``[n, k]``: columns ``U c_k + p_k`` with ``p_k ⊥ U`` a random direction of norm
    ``√perp_sq_k`` (so ``Uᵀv = c`` and ``‖v⊥‖² = perp_sq`` exactly)."""
    v = u @ coords.T
    if bool((perp_sq > 0).any()):
        g = torch.randn(u.shape[0], coords.shape[0], generator=generator, dtype=torch.float64)
        p = g - u @ (u.T @ g)
        v = v + p * (perp_sq.sqrt() / p.norm(dim=0))
    return v


def simulated_errors(
    u: torch.Tensor,
    s: torch.Tensor,
    damping: float,
    vectors: Sequence[torch.Tensor] = (),
) -> dict[str, Any]:
    """Errors from explicit matrices: Cholesky of the formed ``U diag(s) Uᵀ + λI`` (float64).

    ``vectors``: batches ``[n, k]`` whose per-column error ``‖(H+λI)⁻¹v − v/λ‖ / ‖(H+λI)⁻¹v‖``
    is solved with the same factor (``"vector_errors"``, one ``[k]`` tensor per batch).
    """
    n = u.shape[0]
    us = u * s
    system = us @ u.T
    system.diagonal().add_(damping)
    factor = torch.linalg.cholesky(system)
    x = torch.cholesky_solve(us, factor)  # (H + λI)⁻¹ U diag(s)
    d_sq = float(x.square().sum()) / damping**2  # ‖D‖_F², D = −X Uᵀ / λ
    d_trace = -float((u * x).sum()) / damping  # tr D
    inv_sq = d_sq + 2.0 * d_trace / damping + n / damping**2  # ‖(H + λI)⁻¹‖_F²
    solved = [(torch.cholesky_solve(v, factor), v) for v in vectors]
    return {
        "error": math.sqrt(d_sq / inv_sq),
        "error_vs_identity": math.sqrt(d_sq) / (math.sqrt(n) / damping),
        "vector_errors": [(y - v / damping).norm(dim=0) / y.norm(dim=0) for y, v in solved],
    }


def _rank_for(ratio: float, n: int) -> int:
    return min(n - 1, max(1, round(ratio * n)))


def _check(
    dims: Sequence[int],
    ratios: Sequence[float],
    dampings: Sequence[float],
    lam: float,
    others: dict[str, float],
) -> None:
    if not dims or any(int(d) != d or d < 2 for d in dims):
        raise ConfigError(f"--dims must be integers ≥ 2, got {list(dims)}")
    if not ratios or any(not 0 < r < 1 for r in ratios):
        raise ConfigError(f"--ranks are ratios r/n and must lie in (0, 1), got {list(ratios)}")
    for option, value in others.items():
        if not 0 < value < 1:
            raise ConfigError(f"{option} is a ratio r/n and must lie in (0, 1), got {value}")
    if not dampings or any(not (math.isfinite(x) and x > 0) for x in [*dampings, lam]):
        raise ConfigError(f"--damping/--dampings must be > 0, got {lam} and {list(dampings)}")
    if max(dims) > 16_384:
        raise ConfigError(f"--dims: n = {max(dims)} is too large for dense n×n matrices")


def run_theorem1(
    out: Path | str,
    dims: Sequence[int] = (128, 512, 2048),
    damping: float = 0.1,
    ranks: Sequence[float] | None = None,
    dampings: Sequence[float] | None = None,
    seed: int = 0,
    *,
    sweep_ratio: float = 1 / 16,
    heatmap_ratio: float = 1 / 16,
    simulate_max_n: int = 512,
    n_vectors: int = DEFAULT_N_VECTORS,
    loaded: LoadedModel | None = None,
    train: Sequence[Example] | None = None,
    queries: Sequence[Example] | None = None,
    settings: AttributeSettings | None = None,
    sources: dict[str, str] | None = None,
    progress: StageProgress = no_progress,
) -> dict[str, Any]:
    """Simulate Theorem 1; write ``OUT/theorem1.json`` and ``OUT/theorem1.png``; return the JSON.

    Args:
        dims: the dimensions ``n`` (the study: 128, 512, 2048).
        damping: ``λ`` of the rank sweep (the study: 0.1).
        ranks: the ratios ``r/n`` to sweep, each in (0, 1); rank ``r = round(ratio·n)``
            clipped to ``[1, n−1]``. Default ``2⁻⁷ … 2⁻¹``.
        dampings: the ``λ`` values of the λ sweep (at ``r/n = sweep_ratio``); default 1e-3 … 10.
        seed: seeds the draws of ``s`` and ``U`` (one generator, dims in order); the vectors
            use ``seed + 1`` (and ``seed + 2`` for the explicit vectors' null-space directions).
        heatmap_ratio: ``r/n`` of the heat maps of ``H`` and ``H + λI`` (drawn at ``dims[0]``).
        simulate_max_n: up to this ``n`` every row is also computed from explicit matrices;
            above it only one spot-check row per ``n``.
        n_vectors: vectors of each kind (random, in ``range(H)``) per ``n``.
        loaded, train, queries: optional fine-tuned (LoRA) model and its training rows and
            queries: the vector error is then also measured on its query gradients
            (:func:`attriblm.analysis.theorem1_gradients.measure_gradients`, with ``settings``
            for template, loss mask, max length, batch size and the damping rule).

    Returns:
        ``{"rank_sweep": [...], "lambda_sweep": [...], "gradients": {...} | None,
        "all_within_bound", "monotone_in_rank", "max_abs_diff_closed_vs_simulated", ...}``;
        each sweep row holds ``n``, ``r``, ``ratio``, ``lambda``, ``error`` and
        ``error_vs_identity`` (closed form), the same ``*_simulated`` (``None`` where not
        simulated), ``bound``, ``bound_vs_identity``, ``sqrt_ratio`` and the vector errors
        ``vector_error_random`` / ``vector_error_range`` (means; ``*_simulated`` likewise).
    """
    ratios = tuple(DEFAULT_RATIOS if ranks is None else ranks)
    lams = tuple(DEFAULT_DAMPINGS if dampings is None else dampings)
    dims = tuple(int(d) for d in dims)
    others = {"--sweep-ratio": sweep_ratio, "--heatmap-ratio": heatmap_ratio}
    _check(dims, ratios, lams, damping, others)
    _check_gradient_inputs(n_vectors, loaded, train, queries)
    out_path = output_dir(out)
    started = time.perf_counter()
    settings_row: dict[str, Any] = {
        "dims": list(dims),
        "damping": damping,
        "ratios": list(ratios),
        "dampings": list(lams),
        "sweep_ratio": sweep_ratio,
        "heatmap_ratio": heatmap_ratio,
        "simulate_max_n": simulate_max_n,
        "n_vectors": n_vectors,
        "seed": seed,
        "dtype": "float64",
    }
    rank_rows, lambda_rows, heat = _sweeps(settings_row)
    gradients = None
    if loaded is not None:
        from attriblm.analysis.theorem1_gradients import measure_gradients

        assert train is not None and queries is not None
        gradients = measure_gradients(
            loaded, train, queries, settings=settings, sources=sources, progress=progress
        )
    report: dict[str, Any] = {
        **_DEFINITIONS,
        "settings": settings_row,
        "rank_sweep": rank_rows,
        "lambda_sweep": lambda_rows,
        "gradients": gradients,
        **_checks(rank_rows, lambda_rows, dims),
        "wall_s": time.perf_counter() - started,
    }
    write_json(out_path / f"{NAME}.json", report)
    plot_theorem1(report, heat, out_path / f"{NAME}.png")
    return report


def _check_gradient_inputs(
    n_vectors: int,
    loaded: LoadedModel | None,
    train: Sequence[Example] | None,
    queries: Sequence[Example] | None,
) -> None:
    """ConfigError for ``n_vectors < 1`` or real-gradient inputs without a model / rows."""
    if n_vectors < 1:
        raise ConfigError(f"--n-vectors must be at least 1, got {n_vectors}")
    if loaded is None and (train is not None or queries is not None):
        raise ConfigError("theorem1 on real gradients needs a fine-tuned model (--model)")
    if loaded is not None and not (train and queries):
        raise ConfigError("theorem1 on real gradients needs both --train and --queries")


def _sweeps(
    settings: dict[str, Any],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], tuple[torch.Tensor, int, int]]:
    """``(rank rows, λ rows, heat map)`` of every ``n`` in ``settings["dims"]``, in order.

    One generator (``seed``) draws ``s`` and ``U`` per ``n``; the vectors use ``seed + 1`` and
    the explicit vectors' null-space directions ``seed + 2``. The heat map is ``(H [n, n], n,
    r)`` at the first ``n`` with ``r/n = heatmap_ratio``.
    """
    seed = settings["seed"]
    generator = torch.Generator().manual_seed(seed)
    vector_gen = torch.Generator().manual_seed(seed + 1)
    direction_gen = torch.Generator().manual_seed(seed + 2)
    rank_rows: list[dict[str, Any]] = []
    lambda_rows: list[dict[str, Any]] = []
    heat: tuple[torch.Tensor, int, int] | None = None
    for n in settings["dims"]:
        rank_list = sorted({_rank_for(x, n) for x in settings["ratios"]})
        sweep_r = _rank_for(settings["sweep_ratio"], n)
        heat_r = _rank_for(settings["heatmap_ratio"], n) if heat is None else 0
        s_all = random_spectrum(max(*rank_list, sweep_r, heat_r), generator)
        full = n <= settings["simulate_max_n"]
        u_cols = max(*rank_list, sweep_r, heat_r) if full else max(sweep_r, heat_r)
        u_all = random_orthonormal(n, u_cols, generator)
        k = settings["n_vectors"]
        vectors = _Vectors(
            random=torch.randn(k, n, generator=vector_gen, dtype=torch.float64),
            in_range=torch.randn(
                k, max(*rank_list, sweep_r), generator=vector_gen, dtype=torch.float64
            ),
            directions=direction_gen,
        )
        lam0 = settings["damping"]
        for r in rank_list:
            simulate = full or (r == sweep_r)
            rank_rows.append(_row(n, r, s_all, u_all if simulate else None, lam0, vectors))
        for lam in settings["dampings"]:
            simulate = full or lam == lam0
            lambda_rows.append(_row(n, sweep_r, s_all, u_all if simulate else None, lam, vectors))
        if heat is None:
            u, s = u_all[:, :heat_r], s_all[:heat_r]
            heat = ((u * s) @ u.T, n, heat_r)
    assert heat is not None
    return rank_rows, lambda_rows, heat


def _checks(
    rank_rows: list[dict[str, Any]], lambda_rows: list[dict[str, Any]], dims: Sequence[int]
) -> dict[str, Any]:
    """The report's verdicts: within the bound, monotone in ``r/n`` (per ``n``), and how far the
    closed forms and the explicit-matrix solves disagree (absolute; relative on vectors)."""
    all_rows = rank_rows + lambda_rows
    diffs = [
        abs(row[key] - row[f"{key}_simulated"])
        for row in all_rows
        for key in ("error", "error_vs_identity")
        if row[f"{key}_simulated"] is not None
    ]
    vector_diffs = [
        abs(row[key] - row[f"{key}_simulated"]) / row[key]
        for row in all_rows
        for key in ("vector_error_random", "vector_error_range")
        if row[f"{key}_simulated"] is not None
    ]
    monotone = all(
        all(a["error"] < b["error"] for a, b in zip(rows, rows[1:], strict=False))
        for rows in ([x for x in rank_rows if x["n"] == n] for n in dims)
    )
    return {
        "all_within_bound": all(
            row["error"] <= row["bound"] * (1 + 1e-9) + 1e-12
            and row["error_vs_identity"] <= row["bound_vs_identity"] * (1 + 1e-9) + 1e-12
            for row in all_rows
        ),
        "monotone_in_rank": monotone,
        "n_simulated_rows": len(diffs) // 2,
        "max_abs_diff_closed_vs_simulated": max(diffs) if diffs else None,
        "max_rel_diff_vectors_closed_vs_simulated": max(vector_diffs) if vector_diffs else None,
    }


@dataclass
class _Vectors:
    """One ``n``'s test vectors, by coordinates: ``random [k, n]`` in the basis ``[U, U⊥]`` (the
    first ``r`` along ``U``), ``in_range [k, r_max]`` along ``U``; ``directions`` draws the
    null-space directions of the explicit vectors."""

    random: torch.Tensor
    in_range: torch.Tensor
    directions: torch.Generator


def _row(
    n: int,
    r: int,
    s_all: torch.Tensor,
    u_all: torch.Tensor | None,
    lam: float,
    vectors: _Vectors,
) -> dict[str, Any]:
    """One sweep row: closed form from ``s_all[:r]``; simulated too when ``u_all`` is given."""
    s = s_all[:r]
    closed = closed_form_errors(s, n, lam)
    random_c, random_perp = vectors.random[:, :r], vectors.random[:, r:].square().sum(dim=1)
    range_c = vectors.in_range[:, :r]
    range_perp = torch.zeros(range_c.shape[0], dtype=torch.float64)
    random_err = vector_errors(s, random_c, random_perp, lam)
    range_err = vector_errors(s, range_c, range_perp, lam)
    sim = sim_random = sim_range = None
    if u_all is not None:
        u = u_all[:, :r]
        explicit = [
            explicit_vectors(u, random_c, random_perp, vectors.directions),
            explicit_vectors(u, range_c, range_perp, vectors.directions),
        ]
        sim = simulated_errors(u, s, lam, explicit)
        sim_random, sim_range = (float(e.mean()) for e in sim["vector_errors"])
    return {
        "n": n,
        "r": r,
        "ratio": r / n,
        "lambda": lam,
        "error": closed["error"],
        "error_simulated": None if sim is None else sim["error"],
        "bound": closed["bound"],
        "error_vs_identity": closed["error_vs_identity"],
        "error_vs_identity_simulated": None if sim is None else sim["error_vs_identity"],
        "bound_vs_identity": closed["bound_vs_identity"],
        "sqrt_ratio": math.sqrt(r / n),
        "vector_error_random": float(random_err.mean()),
        "vector_error_random_max": float(random_err.max()),
        "vector_error_random_simulated": sim_random,
        "vector_error_range": float(range_err.mean()),
        "vector_error_range_min": float(range_err.min()),
        "vector_error_range_simulated": sim_range,
    }


def plot_theorem1(report: dict[str, Any], heat: tuple[torch.Tensor, int, int], path: Path) -> Path:
    """Heat maps of ``H`` and ``H + λI`` (each / max|·|); matrix error vs ``r/n`` and vs ``λ``;
    vector errors (random, in range(H)) vs ``r/n``; real query gradients per block if measured."""
    plt = pyplot()
    h, n, r = heat
    lam = report["settings"]["damping"]
    fig, grid = plt.subplots(2, 3, figsize=(18, 9.6))
    axes = grid.ravel()
    for ax, mat, title in (
        (axes[0], h, f"H (n={n}, r={r})"),
        (axes[1], h + lam * torch.eye(n, dtype=h.dtype), f"H + λI (λ={lam:g})"),
    ):
        scaled = (mat / mat.abs().max()).numpy()
        image = ax.imshow(scaled, cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set_title(f"{title}, / max|·|")
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(image, ax=ax, fraction=0.046)
    dims = report["settings"]["dims"]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    ax = axes[2]
    for i, n_i in enumerate(dims):
        rows = [row for row in report["rank_sweep"] if row["n"] == n_i]
        x = [row["ratio"] for row in rows]
        c = colors[i % len(colors)]
        ax.plot(x, [row["error"] for row in rows], "o-", color=c, label=f"n={n_i}")
        ax.plot(x, [row["bound"] for row in rows], "--", color=c, alpha=0.7)
    xs = sorted({row["ratio"] for row in report["rank_sweep"]})
    ax.plot(xs, [math.sqrt(x) for x in xs], ":", color="black", label="√(r/n)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("r / n")
    ax.set_ylabel("‖(H+λI)⁻¹ − I/λ‖_F / ‖(H+λI)⁻¹‖_F")
    ax.set_title(f"matrix error vs r/n (λ={lam:g}); dashed: bound")
    ax.legend(fontsize=8)
    ax = axes[3]
    for i, n_i in enumerate(dims):
        rows = [row for row in report["lambda_sweep"] if row["n"] == n_i]
        c = colors[i % len(colors)]
        x = [row["lambda"] for row in rows]
        ax.plot(x, [row["error"] for row in rows], "o-", color=c, label=f"n={n_i}")
        ax.plot(x, [row["bound"] for row in rows], "--", color=c, alpha=0.7)
    last = sorted(
        (row for row in report["lambda_sweep"] if row["n"] == dims[-1]), key=lambda r: r["lambda"]
    )
    ax.plot(
        [row["lambda"] for row in last],
        [row["vector_error_range"] for row in last],
        "s:",
        color="black",
        label=f"v in range(H), n={dims[-1]}",
    )
    ax.axvline(lam, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("λ")
    ax.set_ylabel("relative error")
    ax.set_title(f"error vs λ (r/n = {report['settings']['sweep_ratio']:.3g}); dashed: bound")
    ax.legend(fontsize=8)
    ax = axes[4]
    for i, n_i in enumerate(dims):
        rows = [row for row in report["rank_sweep"] if row["n"] == n_i]
        x = [row["ratio"] for row in rows]
        c = colors[i % len(colors)]
        ax.plot(x, [row["error"] for row in rows], "o-", color=c, label=f"matrix, n={n_i}")
        ax.plot(x, [row["vector_error_random"] for row in rows], "v--", color=c, label="random v")
        ax.plot(
            x, [row["vector_error_range"] for row in rows], "s:", color=c, label="v in range(H)"
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("r / n")
    ax.set_ylabel("‖(H+λI)⁻¹v − v/λ‖ / ‖(H+λI)⁻¹v‖")
    ax.set_title(f"on vectors (λ={lam:g}, mean of {report['settings']['n_vectors']} each)")
    ax.legend(fontsize=7, ncol=len(dims))
    _plot_gradients(axes[5], report.get("gradients"))
    fig.tight_layout()
    return save_figure(fig, path)


def _plot_gradients(ax: Any, gradients: dict[str, Any] | None) -> None:
    """Per LoRA block: the query gradients' vector error and the block's matrix error vs r/d."""
    if not gradients:
        ax.axis("off")
        ax.text(
            0.5,
            0.5,
            "no fine-tuned model given\n(--model/--adapter/--train/--queries)",
            ha="center",
            va="center",
        )
        return
    blocks = list(gradients["blocks"].values())
    x = [b["rank"] / b["d"] for b in blocks]
    for key, marker, label in (
        ("error", "o", "query gradients"),
        ("error_in_range", "^", "their part in range(H)"),
        ("matrix_error", "x", "matrix (Frobenius)"),
    ):
        ys = [json_float(b.get(key)) for b in blocks]
        ax.scatter(x, [float("nan") if y is None else y for y in ys], marker=marker, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("rank(H_b) / d_b")
    ax.set_ylabel("relative error vs I/λ_b")
    q = gradients["queries_summary"]
    ax.set_title(
        f"fine-tuned model, {len(blocks)} LoRA blocks: query error {q['error_mean']:.3g} (mean)",
        fontsize=10,
    )
    ax.legend(fontsize=8)
