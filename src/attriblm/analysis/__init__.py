"""Diagnoses (DESIGN §7): each module runs one and writes ``OUT/<name>.json`` + ``OUT/<name>.png``.

* :mod:`attriblm.analysis.theorem1` — ``(H + λI)⁻¹ ≈ I/λ`` for low-rank ``H`` (simulation).
* :mod:`attriblm.analysis.ihvp_error` — each method's ``Ĥ⁻¹v`` against the exact solve.
* :mod:`attriblm.analysis.convergence` — attribution metrics and ``‖Δθ‖`` per epoch checkpoint.

The command line is :mod:`attriblm.analysis.commands` (``attriblm analyze ...``).
"""
