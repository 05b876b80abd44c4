"""Diagnoses (docs/DESIGN.md §7): each module runs one, writing ``OUT/<name>.json`` and ``.png``.

* :mod:`attriblm.analysis.theorem1` — ``(H + λI)⁻¹`` vs ``I/λ`` for low-rank ``H``: as matrices
  and on vectors (simulation); :mod:`attriblm.analysis.theorem1_gradients` — the same on a
  fine-tuned model's query gradients.
* :mod:`attriblm.analysis.ihvp_error` — each method's ``Ĥ⁻¹v`` against the exact solve.
* :mod:`attriblm.analysis.convergence` — attribution metrics and ``‖Δθ‖`` per epoch checkpoint.
* :mod:`attriblm.analysis.delta_theta` — ``‖Δθ‖`` against backdoor attack success.
* :mod:`attriblm.analysis.subset_retrain` — retrain on each method's top-k rows vs full / random.
* :mod:`attriblm.analysis.counterfactual` — linear datamodeling score from subset retraining
  (statistics and baselines in :mod:`attriblm.analysis.lds`).

Shared pieces: :mod:`attriblm.analysis.generation` (greedy answers, refusal detection) and
:mod:`attriblm.analysis._retrain` (fresh fine-tunes, scoring, query losses).

The command line is :mod:`attriblm.analysis.commands` (``attriblm analyze ...``).
"""
