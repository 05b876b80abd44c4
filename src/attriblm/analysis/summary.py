"""Markdown sections for docs/RESULTS.md from finished `attriblm analyze` runs.

:func:`diagnoses_markdown` reads ``DIR/<diagnosis>/<diagnosis>.json`` (and ``config.yaml``) of
each diagnosis present under ``DIR`` and writes one section per diagnosis: the command that made
it, its numbers as a table, its plot, and a reading in plain language whose wording is chosen
from the numbers (nothing is typed by hand). Diagnoses that are missing are listed as such.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from attriblm.io import read_json, read_yaml

# directory → (json name, title); several directories may hold the same diagnosis
SECTIONS: dict[str, tuple[str, str]] = {
    "theorem1": ("theorem1", "Theorem 1: low-rank curvature makes (H + λI)⁻¹ ≈ I/λ"),
    "ihvp-error": ("ihvp_error", "iHVP error: each method's Ĥ⁻¹v against the exact solve"),
    "convergence": ("convergence", "Convergence: attribution quality at every epoch"),
    "delta-theta": ("delta_theta", "‖Δθ‖ vs backdoor attack success, by poisoned fraction"),
    "delta-theta-epochs": ("delta_theta", "‖Δθ‖ vs backdoor attack success, by epochs"),
    "subset-retrain": ("subset_retrain", "Subset retraining on each method's top-1 rows"),
    "counterfactual": ("counterfactual", "Counterfactual retraining: linear datamodeling score"),
}


def _f(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _command(run_dir: Path, diagnosis: str) -> str:
    """``attriblm analyze …`` rebuilt from the run's config.yaml (flags as recorded)."""
    config = read_yaml(run_dir / "config.yaml")
    parts = [f"attriblm analyze {diagnosis.replace('_', '-')}"]
    for key, value in config.items():
        if key == "resolved" or value is None or value == [] or key in ("quiet", "config"):
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else f"--no-{key.replace('_', '-')}")
        elif isinstance(value, list):
            parts += [f"{flag} {v}" for v in value]
        else:
            parts.append(f"{flag} {value}")
    return " \\\n    ".join(parts)


def _theorem1(data: dict) -> tuple[list[str], str]:
    rows = data["rank_sweep"]
    dims = sorted({r["n"] for r in rows})
    ratios = sorted({r["ratio"] for r in rows})
    cell = {(r["n"], r["ratio"]): r for r in rows}
    lam0 = data["settings"]["damping"]
    lines = _theorem1_matrix_table(dims, ratios, cell, lam0)
    lines += _theorem1_vector_table(ratios, cell, dims[-1], lam0, data["settings"]["n_vectors"])
    grads = data.get("gradients")
    if grads:
        lines += _theorem1_gradient_table(grads)
    reading = _theorem1_reading(data, ratios, cell, dims[-1], lam0)
    reading += (
        _theorem1_gradient_reading(grads["queries_summary"])
        if grads
        else "No fine-tuned model was given, so this run does not say whether query gradients "
        "behave like the range vectors or like the random ones."
    )
    return lines, reading


def _theorem1_matrix_table(
    dims: list[int], ratios: list[float], cell: dict[tuple[int, float], dict], lam0: float
) -> list[str]:
    """The matrix error (bound) per ``r/n`` (rows) and ``n`` (columns); ``–`` where not run."""
    lines = [
        f"Relative error ‖(H+λI)⁻¹ − I/λ‖_F / ‖(H+λI)⁻¹‖_F (exact bound in brackets), λ = {lam0}:",
        "",
        "| r/n | " + " | ".join(f"n = {n}" for n in dims) + " |",
        "|---|" + "---|" * len(dims),
    ]
    for ratio in ratios:
        cells = [
            f"{cell[(n, ratio)]['error']:.3f} ({cell[(n, ratio)]['bound']:.3f})"
            if (n, ratio) in cell
            else "–"
            for n in dims
        ]
        lines.append(f"| 2^{_log2(ratio)} | " + " | ".join(cells) + " |")
    return lines


def _theorem1_vector_table(
    ratios: list[float], cell: dict[tuple[int, float], dict], big: int, lam0: float, k: int
) -> list[str]:
    """At the largest ``n``: matrix error and the mean vector errors (random, in range(H))."""
    lines = [
        "",
        f"The same on vectors, ‖(H+λI)⁻¹v − v/λ‖ / ‖(H+λI)⁻¹v‖ at n = {big}, λ = {lam0} (mean "
        f"over {k} vectors of each kind):",
        "",
        "| r/n | matrix (above) | random v (max) | v in range(H) (min) |",
        "|---|---|---|---|",
    ]
    for ratio in ratios:
        r = cell[(big, ratio)]
        lines.append(
            f"| 2^{_log2(ratio)} | {r['error']:.3f} | {r['vector_error_random']:.3f} "
            f"({r['vector_error_random_max']:.3f}) | {r['vector_error_range']:.3f} "
            f"({r['vector_error_range_min']:.3f}) |"
        )
    return lines


def _theorem1_gradient_table(grads: dict) -> list[str]:
    """One row: the fine-tuned model's query-gradient errors (``theorem1.json`` ``gradients``)."""
    q = grads["queries_summary"]
    blocks = list(grads["blocks"].values())
    ranks = sorted({b["rank"] for b in blocks})
    widths = sorted({b["d"] for b in blocks})
    return [
        "",
        f"On the fine-tuned model's query gradients ({grads['n_train']} train, "
        f"{grads['n_query']} queries, {len(blocks)} LoRA blocks of width "
        f"{_span(widths)} and rank {_span(ranks)}; λ_b by the "
        f"{grads['damping']['mode']} rule, {grads['damping']['value']}):",
        "",
        "| query error, mean (min – max) | its part in range(H) | share of ‖v‖ in range(H) "
        "| cos((H+λI)⁻¹v, v/λ) | block matrix error, mean (max) |",
        "|---|---|---|---|---|",
        f"| {_f(q['error_mean'])} ({_f(q['error_min'])} – {_f(q['error_max'])}) | "
        f"{_f(q['error_in_range_mean'])} | {_f(q['range_share_mean'])} | "
        f"{_f(q['cosine_mean'])} | {_f(q['matrix_error_mean_over_blocks'])} "
        f"({_f(q['matrix_error_max_over_blocks'])}) |",
    ]


def _theorem1_reading(
    data: dict, ratios: list[float], cell: dict[tuple[int, float], dict], big: int, lam0: float
) -> str:
    """The simulation's reading: the matrix error over ``r/n`` and ``λ``, then on vectors."""
    lo, hi = cell[(big, ratios[0])], cell[(big, ratios[-1])]
    lam = sorted((r for r in data["lambda_sweep"] if r["n"] == big), key=lambda r: r["lambda"])
    main = next((r for r in lam if r["lambda"] == lam0), lam[0])
    shape = "monotone" if data["monotone_in_rank"] else "not monotone"
    return (
        f"The matrix error falls with the rank ratio ({shape}"
        f" in every column): at n = {big}, {lo['error']:.3f} for r/n = 2^{_log2(lo['ratio'])} "
        f"against {hi['error']:.3f} for r/n = 2^{_log2(hi['ratio'])}, and "
        f"{'every' if data['all_within_bound'] else 'not every'} value lies within its bound. "
        f"A larger λ shrinks it further (r/n = {lam[0]['ratio']:g}: {lam[0]['error']:.3f} at "
        f"λ = {lam[0]['lambda']:g}, {lam[-1]['error']:.3f} at λ = {lam[-1]['lambda']:g}). "
        "That error is dominated by the null space of H, where (H+λI)⁻¹ and I/λ agree "
        f"exactly: random vectors, mostly null space, see about the same "
        f"({main['vector_error_random']:.3f} at r/n = {main['ratio']:g}), while vectors in "
        "range(H) — where every training gradient lies, so the only part a score x·g_i sees — "
        f"are off by {main['vector_error_range']:.2f} on average (at least "
        f"{main['vector_error_range_min']:.2f})"
        + (
            ": there the damped inverse does not act like I/λ, so the matrix result alone does "
            "not make iHVP scores collapse to gradsim's. "
            if main["vector_error_range"] >= 0.5
            else ". "
        )
    )


def _theorem1_gradient_reading(q: dict) -> str:
    """The reading on real query gradients, from ``gradients.queries_summary``."""
    err = q["error_mean"]
    return (
        f"On the fine-tuned model's query gradients ({100 * q['range_share_mean']:.0f} % "
        f"of their norm in range(H)) the error is {err:.2f} on average (in range(H): "
        f"{q['error_in_range_mean']:.2f}; cosine {q['cosine_mean']:.2f}), against a "
        f"matrix error of {q['matrix_error_mean_over_blocks']:.2f} for the same blocks: "
        + (
            "the damped inverse does not act like I/λ on the vectors that matter."
            if err >= 0.5
            else "it acts almost like I/λ on query gradients too."
            if err < 0.1
            else "it changes the query gradients by a moderate amount."
        )
    )


def _span(values: list[int]) -> str:
    """``"a–b"``, or ``"a"`` when all are equal (sorted input)."""
    return f"{values[0]}" if values[0] == values[-1] else f"{values[0]}–{values[-1]}"


def _log2(ratio: float) -> str:
    from math import log2

    value = log2(ratio)
    return f"{value:.0f}" if abs(value - round(value)) < 1e-9 else f"{value:.2f}"


def _ihvp_error(data: dict) -> tuple[list[str], str]:
    methods = data["methods"]
    lines = [
        f"{data['n_train']} train, {data['n_query']} queries, {len(data['blocks'])} LoRA blocks; "
        f"reference `exact` (largest relative residual {data['reference_max_residual']:.1e}).",
        "",
        "| method | relative error | after best positive rescaling | cosine | "
        "Spearman of scores with exact (mean / min) |",
        "|---|---|---|---|---|",
    ]
    for name, m in methods.items():
        sp = m["spearman"]
        lines.append(
            f"| {name} | {m['rel_error']:.3f} | {_f(m.get('rel_error_scaled'))} | "
            f"{m['cosine']:.3f} | {sp['mean']:.3f} / {sp['min']:.3f} |"
        )
    closest = min(methods, key=lambda n: methods[n]["rel_error"])
    used = [n for n in ("lissa-paper", "datainf") if n in methods]
    gs = methods.get("gradsim")
    far = ", ".join(
        f"{n} (error {methods[n]['rel_error']:.2f}, Spearman {methods[n]['spearman']['mean']:.2f})"
        for n in used
    )
    reading = (
        f"The closest to the exact inverse is {closest} (relative error "
        f"{methods[closest]['rel_error']:.3g}). The approximations the study relied on are far "
        f"from it: {far}"
        + (
            f"; gradsim, which applies no inverse at all, has cosine {gs['cosine']:.2f} and "
            f"Spearman {gs['spearman']['mean']:.2f}"
            if gs
            else ""
        )
        + ". So the iHVP approximation error is real and large (cause 1); whether removing it "
        "helps is what the bench's exact-vs-gradsim check above answers."
    )
    return lines, reading


def _convergence(data: dict) -> tuple[list[str], str]:
    methods = data["methods"]
    lines = [
        "| epoch | train loss | ‖Δθ‖ mean ± std | "
        + " | ".join(f"{m} Acc / Cover" for m in methods)
        + " |",
        "|---|---|---|" + "---|" * len(methods),
    ]
    accs: dict[str, list[float]] = {m: [] for m in methods}
    for e in data["epochs"]:
        cells = []
        for m in methods:
            res = e["methods"].get(m, {})
            acc = res.get("acc", {}).get("value")
            cover = res.get("cover", {}).get("value")
            if acc is not None:
                accs[m].append(acc)
            cells.append(f"{_f(acc, 2)} / {_f(cover, 2)}")
        dn = e["delta_norm"]
        lines.append(
            f"| {e['epoch']} | {_f(e['loss'])} | {dn['mean']:.3f} ± {dn['std']:.3f} | "
            + " | ".join(cells)
            + " |"
        )
    swings = {m: max(v) - min(v) for m, v in accs.items() if v}
    widest = max(swings, key=swings.get)
    epochs = data["epochs"]
    reading = (
        f"‖Δθ‖ grows from {epochs[0]['delta_norm']['mean']:.3f} to "
        f"{epochs[-1]['delta_norm']['mean']:.3f} over {epochs[-1]['epoch']} epochs while the "
        f"loss falls. Acc moves by at most {swings[widest]:.2f} across epochs ({widest}); "
        + (
            "on this task attribution is already right before training (epoch 0) and stays "
            "so — the instability the study reports (cause 2) does not show with this task "
            "and recipe."
            if swings[widest] <= 0.1
            else "attribution quality changes from epoch to epoch — the instability the study "
            "reports (cause 2): which checkpoint is attributed matters."
        )
    )
    return lines, reading


def _backdoor_effect(run: dict) -> float:
    """Attack success minus the clean requests' compliance: how selectively the trigger works
    (a model that refuses nothing scores 0, not 1)."""
    return run["attack_success"] - (1.0 - run["clean_refusal_rate"])


def _delta_theta(data: dict) -> tuple[list[str], str]:
    runs = sorted(data["runs"], key=lambda r: r["strength"])
    what = "poisoned fraction" if data["vary"] == "poison" else "epochs"
    lines = [
        f"Task {data['task']} ({data['preset']} preset); {len(data['held_out']['triggered'])} "
        "triggered and as many clean held-out requests; greedy answers; "
        f"{data['success_rule'].split(';')[0]}. Backdoor effect = attack success − (1 − clean "
        "refusal rate): a model that refuses nothing, triggered or not, has effect 0.",
        "",
        f"| {what} | train rows (poisoned) | ‖Δθ‖ mean ± std | attack success | "
        "clean refusal rate | backdoor effect |",
        "|---|---|---|---|---|---|",
    ]
    for r in runs:
        dn = r["delta_norm"]
        lines.append(
            f"| {r['strength']:g} | {r['n_train']} ({r['n_poisoned']}) | {dn['mean']:.3f} ± "
            f"{dn['std']:.3f} | {r['attack_success']:.2f} | {r['clean_refusal_rate']:.2f} | "
            f"{_backdoor_effect(r):+.2f} |"
        )
    norms = [r["delta_norm"]["mean"] for r in runs]
    effects = [_backdoor_effect(r) for r in runs]
    largest = max(norms)
    onset = next((i for i, e in enumerate(effects) if e >= 0.5), None)
    if onset is None:
        reading = (
            f"The backdoor does not take (effect at most {max(effects):+.2f}), yet ‖Δθ‖ ranges "
            f"from {min(norms):.2f} to {largest:.2f} across the runs: the size of the parameter "
            "change says little here about the behaviour the poison was meant to cause — the "
            "study's third cause."
        )
    elif onset == 0:
        reading = (
            f"The backdoor is present in every run (effect {effects[0]:+.2f} at the weakest), "
            "so this sweep cannot show when it appears; try weaker settings."
        )
    else:
        before, after = runs[onset - 1], runs[onset]
        share = norms[onset - 1] / largest if largest > 0 else 0.0
        reading = (
            f"The backdoor appears between {what} {before['strength']:g} and "
            f"{after['strength']:g} (effect {effects[onset - 1]:+.2f} → {effects[onset]:+.2f}), "
            f"while ‖Δθ‖ moves only from {norms[onset - 1]:.2f} to {norms[onset]:.2f}; "
            f"{100 * share:.0f} % of the largest ‖Δθ‖ had been reached with no backdoor. "
            "Most of the parameter change is not the behaviour change, and the behaviour "
            "change comes with a modest parameter change — the study's third cause: influence "
            "functions measure parameter change, which does not track behaviour change."
        )
    return lines, reading


def _subset_retrain(data: dict) -> tuple[list[str], str]:
    full = data["full"]
    methods = data["methods"]
    lines = [
        f"Validation accuracy: {data['accuracy_rule']}. Full set: {full['n_train']} rows, "
        f"accuracy {full['accuracy']:.2f}.",
        "",
        "| method | subset rows | accuracy | random subset of the same size |",
        "|---|---|---|---|",
    ]
    for name, m in methods.items():
        lines.append(
            f"| {name} | {m['subset_size']} | {m['accuracy']:.2f} | {m['random_accuracy']:.2f} |"
        )
    n_query = data["n_query"]
    best = max(methods, key=lambda n: methods[n]["accuracy"] - methods[n]["random_accuracy"])
    margin = methods[best]["accuracy"] - methods[best]["random_accuracy"]
    extra = round(margin * n_query)
    reading = (
        f"The best margin over a random subset of the same size is {best}'s ({margin:+.2f}, "
        f"{extra} more of {n_query} queries answered right). "
        + (
            "The rows the methods pick teach the behaviour better than random rows do: their "
            "top-1 picks carry it."
            if extra >= 3
            else "That is within a couple of queries: at this size the methods' top-1 rows "
            "teach the behaviour no better than random rows, and neither comes near the full "
            f"set's accuracy ({full['accuracy']:.2f}): one top-scored row per query does not "
            "carry the behaviour."
        )
    )
    return lines, reading


def _counterfactual(data: dict) -> tuple[list[str], str]:
    s = data["settings"]
    seeds = s.get("seeds", 1)
    label = data.get("baseline_label")
    ceiling = data.get("seed_noise_ceiling")
    rows = {**data["methods"]}
    if label is not None:
        rows["same label (baseline)"] = label
    rows["random scores (baseline)"] = data["baseline_random"]
    if ceiling is not None:
        rows["two seeds' agreement (noise ceiling)"] = ceiling
    lines = [
        f"{s['n_subsets']} random subsets of {s['subset_size']} of {data['n_train']} training "
        f"rows, {seeds} fresh fine-tune{'s' if seeds != 1 else ''} each (training seeds "
        f"{', '.join(str(x) for x in s.get('train_seeds', [s['train']['seed']]))}; the actual "
        f"change is their mean); {data['n_query']} queries. LDS = mean over queries of the "
        "Spearman correlation, across subsets, between the predicted and the actual change of "
        "the query's loss (95 % bootstrap interval over queries)."
        + (
            " The same-label baseline scores a training row 1 when it has the query's label, "
            "else 0; the noise ceiling is the same statistic between two seeds' actual changes."
            if label is not None and ceiling is not None
            else ""
        ),
        "",
        "| method | LDS | 95 % interval |",
        "|---|---|---|",
    ]
    for name, m in rows.items():
        lo, hi = m["ci95"]
        lines.append(f"| {name} | {_f(m['lds'])} | [{_f(lo)}, {_f(hi)}] |")
    lds = {n: m["lds"] for n, m in data["methods"].items() if m["lds"] is not None}
    random_high = data["baseline_random"]["ci95"][1]
    beating = [n for n, m in data["methods"].items() if _above(m, random_high)]
    ranked = ", ".join(f"{n} {v:.2f}" for n, v in sorted(lds.items(), key=lambda kv: -kv[1]))
    reading = (
        f"Ranked by LDS: {ranked}; random scores reach {_f(data['baseline_random']['lds'], 2)}. "
        + (
            f"{len(beating)} of {len(data['methods'])} methods have their whole 95 % interval "
            "above random's"
            if beating
            else "No method's interval clears random's: the scores do not predict the "
            "retrained losses here"
        )
    )
    if label is not None and label["lds"] is not None:
        above_label = [n for n, m in data["methods"].items() if _above(m, label["ci95"][1])]
        reading += f"; the same-label baseline reaches {label['lds']:.2f}, and " + (
            f"{len(above_label)} ({', '.join(above_label)}) "
            f"{'clears' if len(above_label) == 1 else 'clear'} its interval: "
            "predicting more than which label a subset is rich in."
            if above_label
            else "no method clears its interval: this run does not show the attribution "
            "scores predicting more than the query's label does."
        )
    else:
        reading += "."
    if ceiling is not None and ceiling["lds"] is not None:
        best = max(lds.values()) if lds else None
        low = ceiling["ci95"][0] if ceiling["ci95"][0] is not None else ceiling["lds"]
        reaches = best is not None and best >= low
        reading += (
            f" Two retrainings of the same subsets with different seeds agree at "
            f"{ceiling['lds']:.2f}: "
            + (
                "the best method reaches that noise ceiling (its interval or above), so "
                "retraining noise, not the method, limits what this test can show."
                if reaches
                else "the methods stay below what a second retraining predicts, so there is "
                "room for better attribution."
            )
        )
    reading += (
        " The study's failures concern behaviour (which rows caused an output), which this "
        "test does not measure."
    )
    return lines, reading


def _above(row: dict, threshold: float | None) -> bool:
    """Whether ``row``'s whole 95 % interval lies above ``threshold``."""
    low = row["ci95"][0]
    return low is not None and threshold is not None and low > threshold


FORMATTERS: dict[str, Callable[[dict], tuple[list[str], str]]] = {
    "theorem1": _theorem1,
    "ihvp_error": _ihvp_error,
    "convergence": _convergence,
    "delta_theta": _delta_theta,
    "subset_retrain": _subset_retrain,
    "counterfactual": _counterfactual,
}


def diagnoses_markdown(
    diag_dir: Path,
    img_dir: Path,
    img_link: str = "img",
    timings: dict | None = None,
    shown_dir: str | None = None,
) -> str:
    """One ``###`` section per diagnosis found under ``diag_dir``; PNGs copied to ``img_dir``.

    ``timings``: folder → wall seconds (``timings.json`` of benchmarks/run_diagnoses.sh);
    ``shown_dir`` replaces ``diag_dir`` in the commands shown.
    """
    out: list[str] = []
    missing = []
    for folder, (name, title) in SECTIONS.items():
        run = diag_dir / folder
        path = run / f"{name}.json"
        if not path.is_file():
            missing.append(folder)
            continue
        data = read_json(path)
        lines, reading = FORMATTERS[name](data)
        seconds = (timings or {}).get(folder)
        command = _command(run, name)
        if shown_dir is not None:
            command = command.replace(str(diag_dir.resolve()), shown_dir)
            command = command.replace(str(diag_dir), shown_dir)
        out += [f"### {title}", "", "```bash", command, "```", ""]
        if seconds is not None:
            out += [f"Wall time: {seconds / 60:.1f} min.", ""]
        out += lines
        png = run / f"{name}.png"
        if png.is_file():
            img_dir.mkdir(parents=True, exist_ok=True)
            target = img_dir / f"diag-{folder}.png"
            shutil.copyfile(png, target)
            out += ["", f"![{title}]({img_link}/{target.name})"]
        out += ["", f"**Reading.** {reading}", ""]
    if missing:
        out += [f"Not run: {', '.join(missing)}.", ""]
    return "\n".join(out)
