"""The study's claims on synthetic per-query bench tables: bootstrap intervals and verdicts."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from attriblm.pipeline import claims
from attriblm.pipeline.bench_summary import findings_markdown

MASK = "paper"
IDENT = ["harmful-s", "backdoor-1"]
N_QUERY = 40


def _values(mean: float, spread: float, key: str, n: int = N_QUERY) -> np.ndarray:
    """``n`` values with mean exactly ``mean``: half ``mean + spread``, half ``mean − spread``,
    in an order fixed by ``key`` (so different methods' noise is not aligned)."""
    signs = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    return mean + spread * np.random.default_rng(zlib.crc32(key.encode())).permutation(signs)


def _table(spec: dict[str, dict[str, float]], tasks=IDENT, spread: float = 0.05) -> dict:
    """Per method a mean Cover and AUPRC on every task; Acc saturated at 1.0 for all."""
    table = {}
    for task in tasks:
        for method, m in spec.items():
            table[(task, MASK, method)] = {
                "cover": _values(m["cover"], spread, f"{task}/{method}/cover"),
                "auprc": _values(m["auprc"], spread, f"{task}/{method}/auprc"),
                "acc": np.ones(N_QUERY),
            }
    return table


def _ahead(table, influence=("exact", "kfac"), n_boot=400):
    return claims.repsim_ahead(table, MASK, IDENT, list(influence), 0.2, n_boot=n_boot)


def test_verdict_rules():
    assert claims.verdict(0.25, 0.4, 0.2, ">=") == "agrees"
    assert claims.verdict(0.0, 0.19, 0.2, ">=") == "does not agree"
    assert claims.verdict(0.1, 0.3, 0.2, ">=") == "inconclusive"
    assert claims.verdict(-0.2, 0.0, 0.0, "<=") == "agrees"
    assert claims.verdict(0.01, 0.2, 0.0, "<=") == "does not agree"
    assert claims.verdict(-0.1, 0.1, 0.0, "<=") == "inconclusive"
    assert claims.verdict(float("nan"), 0.1, 0.0, "<=") == "not measured"
    with pytest.raises(ValueError):
        claims.verdict(0.0, 1.0, 0.5, ">")


def test_repsim_far_ahead_agrees_although_acc_is_saturated():
    table = _table(
        {
            "repsim": {"cover": 0.9, "auprc": 0.95},
            "exact": {"cover": 0.5, "auprc": 0.6},
            "kfac": {"cover": 0.55, "auprc": 0.62},
        }
    )
    item = _ahead(table)
    metrics = item["numbers"]["metrics"]
    assert item["verdict"] == "agrees"
    assert metrics["cover"]["value"] == pytest.approx(0.9 - 0.55)
    assert metrics["cover"]["best_influence"] == "kfac"
    assert metrics["auprc"]["value"] == pytest.approx(0.95 - 0.62)
    lo, hi = metrics["cover"]["ci95"]
    assert 0.2 < lo < metrics["cover"]["value"] < hi
    # Acc is 1.0 everywhere: difference 0, interval [0, 0], so Acc alone would say "does not
    # agree"; it is reported but the verdict comes from Cover and AUPRC
    assert metrics["acc"]["value"] == 0.0 and metrics["acc"]["ci95"] == [0.0, 0.0]
    assert metrics["acc"]["verdict"] == "does not agree"
    assert item["numbers"]["verdict_metrics"] == ["cover", "auprc"]


def test_repsim_behind_does_not_agree():
    table = _table({"repsim": {"cover": 0.5, "auprc": 0.55}, "exact": {"cover": 0.9, "auprc": 0.9}})
    item = _ahead(table, influence=["exact"])
    assert item["verdict"] == "does not agree"
    assert item["numbers"]["metrics"]["cover"]["ci95"][1] < 0.2


def test_a_margin_inside_the_interval_is_inconclusive():
    """Exactly 0.2 ahead on average, with per-query noise: the interval contains 0.2."""
    table = _table(
        {"repsim": {"cover": 0.7, "auprc": 0.7}, "exact": {"cover": 0.5, "auprc": 0.5}},
        spread=0.3,
    )
    item = _ahead(table, influence=["exact"])
    cover = item["numbers"]["metrics"]["cover"]
    assert cover["value"] == pytest.approx(0.2)
    assert cover["ci95"][0] < 0.2 < cover["ci95"][1]
    assert item["verdict"] == "inconclusive"


def test_cover_and_auprc_disagreeing_is_inconclusive():
    table = _table({"repsim": {"cover": 0.9, "auprc": 0.5}, "exact": {"cover": 0.5, "auprc": 0.9}})
    item = _ahead(table, influence=["exact"])
    metrics = item["numbers"]["metrics"]
    assert metrics["cover"]["verdict"] == "agrees"
    assert metrics["auprc"]["verdict"] == "does not agree"
    assert item["verdict"] == "inconclusive"


def test_missing_methods_or_tasks_are_not_measured():
    table = _table({"exact": {"cover": 0.5, "auprc": 0.5}})
    assert _ahead(table)["verdict"] == "not measured"
    assert claims.repsim_ahead(table, MASK, [], ["exact"], 0.2)["verdict"] == "not measured"
    assert claims.every_method_high(table, MASK, "math", ["exact"], 0.8)["verdict"] == (
        "not measured"
    )


def test_bootstrap_pairs_methods_within_a_task():
    """Identical per-query values: every replicate's difference is exactly 0."""
    spec = {"exact": {"cover": 0.6, "auprc": 0.7}, "gradsim": {"cover": 0.6, "auprc": 0.7}}
    table = _table(spec, spread=0.3)
    for task in IDENT:
        table[(task, MASK, "gradsim")] = dict(table[(task, MASK, "exact")])
    noisy = claims.exact_not_better(_table(spec, spread=0.3), MASK, IDENT, n_boot=200)
    lo, hi = noisy["numbers"]["metrics"]["cover"]["ci95"]
    assert lo < 0 < hi and noisy["verdict"] == "inconclusive"  # unpaired noise: wide interval
    item = claims.exact_not_better(table, MASK, IDENT, n_boot=200)
    for metric in ("cover", "auprc", "acc"):
        assert item["numbers"]["metrics"][metric]["ci95"] == [0.0, 0.0]
    assert item["verdict"] == "agrees"
    better = _table({**spec, "exact": {"cover": 0.9, "auprc": 0.95}})
    assert claims.exact_not_better(better, MASK, IDENT, n_boot=200)["verdict"] == "does not agree"


def test_every_method_high_uses_the_lowest_method():
    spec = {"gradsim": {"cover": 0.95, "auprc": 0.97}, "repsim": {"cover": 0.9, "auprc": 0.92}}
    high = claims.every_method_high(_table(spec, tasks=["math"]), MASK, "math", list(spec), 0.8)
    assert high["verdict"] == "agrees"
    assert high["numbers"]["metrics"]["cover"]["lowest"] == "repsim"
    spec["repsim"] = {"cover": 0.4, "auprc": 0.5}
    low = claims.every_method_high(_table(spec, tasks=["math"]), MASK, "math", list(spec), 0.8)
    assert low["verdict"] == "does not agree"
    assert low["numbers"]["metrics"]["cover"]["value"] == pytest.approx(0.4)


def test_the_bootstrap_is_seeded_and_undefined_queries_are_skipped():
    table = _table(
        {"repsim": {"cover": 0.8, "auprc": 0.8}, "exact": {"cover": 0.5, "auprc": 0.5}},
        spread=0.2,
    )
    table[(IDENT[0], MASK, "repsim")]["auprc"][:3] = np.nan  # undefined for three queries
    a, b = _ahead(table, influence=["exact"]), _ahead(table, influence=["exact"])
    assert a == b
    auprc = a["numbers"]["metrics"]["auprc"]
    assert auprc["value"] is not None and not np.isnan(auprc["ci95"]).any()
    other = claims.repsim_ahead(table, MASK, IDENT, ["exact"], 0.2, n_boot=400, seed=1)
    assert other["numbers"]["metrics"]["cover"]["ci95"] != a["numbers"]["metrics"]["cover"]["ci95"]


def test_markdown_states_the_criterion_beside_each_verdict():
    table = _table(
        {
            "repsim": {"cover": 0.9, "auprc": 0.95},
            "exact": {"cover": 0.5, "auprc": 0.6},
            "gradsim": {"cover": 0.3, "auprc": 0.3},
        }
    )
    items = [
        _ahead(table, influence=["exact"]),
        claims.exact_not_better(table, MASK, IDENT, n_boot=100),
        claims.every_method_high(table, MASK, "math", ["exact"], 0.8),
    ]
    lines = findings_markdown(items).splitlines()
    assert len(lines) == 3
    ahead = lines[0]
    assert "Cover +0.400 [" in ahead and "AUPRC +0.350 [" in ahead
    assert "Acc (beside, not used for the verdict) +0.000 [0.000, 0.000]" in ahead
    assert "best influence function exact 0.500" in ahead
    assert "Criterion: difference ≥ 0.2" in ahead and "This run **agrees**." in ahead
    assert "bootstrap over queries (400 draws, seed 0" in ahead
    assert "Criterion: difference ≤ 0" in lines[1] and "This run **does not agree**." in lines[1]
    assert "This run not measured." in lines[2]
