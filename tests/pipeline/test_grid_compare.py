"""Builder grid vs study-data grid per task family (attriblm.pipeline.grid_compare), on
hand-made results rows whose Spearman and RepSim ordering are known."""

from __future__ import annotations

import math

import pytest

from attriblm.pipeline.grid_compare import (
    FAMILIES,
    compare_grids,
    family_cover,
    repsim_gap,
    spearman,
)


def rows(covers: dict[str, dict[str, float | None]], mask: str = "response") -> list[dict]:
    """``{task: {method: cover}}`` as ``results.csv`` rows (other columns irrelevant here)."""
    return [
        {"task": task, "loss_mask": mask, "method": method, "cover": value, "acc": None}
        for task, per_method in covers.items()
        for method, value in per_method.items()
    ]


def entry(result: dict, family: str, mask: str = "response") -> dict:
    (found,) = [e for e in result["entries"] if (e["family"], e["loss_mask"]) == (family, mask)]
    return found


METHODS = ("gradsim", "repsim", "datainf", "ekfac", "tracin")


def test_known_spearman_over_family_means():
    # harmful family means (builder): 1, 2, 3, 4, 5 from two tasks each; study: 2, 1, 4, 3, 5
    # -> Σd² = 4, rho = 1 - 6·4 / (5·24) = 0.8
    builder = rows(
        {
            "harmful-s": dict(zip(METHODS, [0.5, 1.5, 2.5, 3.5, 4.5], strict=True)),
            "harmful-m": dict(zip(METHODS, [1.5, 2.5, 3.5, 4.5, 5.5], strict=True)),
            "harmful-l": dict.fromkeys(METHODS, 0.0),  # not on the study grid: left out
        }
    )
    study = rows(
        {
            "harmful-s": dict(zip(METHODS, [0.2, 0.1, 0.4, 0.3, 0.5], strict=True)),
            "harmful-m": dict(zip(METHODS, [0.2, 0.1, 0.4, 0.3, 0.5], strict=True)),
        }
    )
    e = entry(compare_grids(builder, study), "harmful")
    assert e["tasks"] == ["harmful-s", "harmful-m"]
    assert e["tasks_per_grid"]["builder"] == ["harmful-s", "harmful-m", "harmful-l"]
    assert e["methods"] == list(METHODS)
    assert e["cover"]["builder"] == dict(zip(METHODS, [1.0, 2.0, 3.0, 4.0, 5.0], strict=True))
    assert e["spearman"] == pytest.approx(0.8)
    assert e["spearman_reason"] is None
    # RepSim vs the best influence function: 2 − ekfac 4 < 0 and 0.1 − datainf 0.4 < 0
    gaps = e["repsim_vs_influence"]
    assert gaps["builder"]["best_influence"] == "ekfac"
    assert gaps["builder"]["difference"] == pytest.approx(-2.0)
    assert gaps["study"]["best_influence"] == "datainf"
    assert gaps["study"]["difference"] == pytest.approx(-0.3)
    assert e["ordering"] == "agrees" and e["ordering_reason"] is None


def test_ties_use_average_ranks():
    # builder ranks (ties averaged) 2.5, 2.5, 4, 1; study 2, 3, 4, 1 -> rho = 4.5 / √(4.5·5)
    methods = ("gradsim", "repsim", "datainf", "lissa")
    builder = rows({"grammars": dict(zip(methods, [0.5, 0.5, 0.8, 0.2], strict=True))})
    study = rows({"grammars": dict(zip(methods, [0.1, 0.3, 0.9, 0.0], strict=True))})
    e = entry(compare_grids(builder, study), "class attribution")
    assert e["spearman"] == pytest.approx(math.sqrt(0.9))
    assert spearman([0.5, 0.5, 0.8, 0.2], [0.1, 0.3, 0.9, 0.0]) == pytest.approx(math.sqrt(0.9))


def test_ordering_disagrees_when_the_sign_flips():
    methods = ("gradsim", "repsim", "datainf", "lissa")
    builder = rows({"backdoor-1": dict(zip(methods, [0.4, 0.9, 0.6, 0.7], strict=True))})
    study = rows({"backdoor-1": dict(zip(methods, [0.4, 0.5, 0.6, 0.7], strict=True))})
    e = entry(compare_grids(builder, study), "backdoor")
    gaps = e["repsim_vs_influence"]
    assert gaps["builder"]["sign"] == 1 and gaps["study"]["sign"] == -1
    assert gaps["builder"]["difference"] == pytest.approx(0.2)  # 0.9 − lissa 0.7
    assert e["ordering"] == "disagrees"


def test_a_family_missing_on_one_side_is_a_dash_with_the_reason():
    builder = rows({"backdoor-1": dict.fromkeys(("gradsim", "repsim", "datainf"), 0.5)})
    study = rows({"grammars": dict.fromkeys(("gradsim", "repsim", "datainf"), 0.5)})
    result = compare_grids(builder, study)
    backdoor = entry(result, "backdoor")
    assert backdoor["spearman"] is None and backdoor["ordering"] is None
    assert backdoor["spearman_reason"] == (
        "no backdoor task under loss mask response on the study grid"
    )
    assert backdoor["ordering_reason"] == backdoor["spearman_reason"]
    assert backdoor["repsim_vs_influence"] == {"builder": None, "study": None}
    assert entry(result, "harmful")["spearman_reason"] == (
        "no harmful task under loss mask response on either grid"
    )
    assert entry(result, "class attribution")["spearman_reason"].endswith("on the builder grid")
    assert [(e["family"], e["loss_mask"]) for e in result["entries"]] == [
        (family, "response") for family in FAMILIES
    ]


def test_a_loss_mask_on_one_grid_only():
    covers = {"grammars": dict.fromkeys(("gradsim", "repsim", "datainf"), 0.5)}
    result = compare_grids(rows(covers) + rows(covers, "paper"), rows(covers))
    assert result["loss_masks"] == ["response", "paper"]
    e = entry(result, "class attribution", "paper")
    assert (
        e["spearman_reason"] == "no class attribution task under loss mask paper on the study grid"
    )


def test_methods_need_a_cover_on_every_shared_task_of_both_grids():
    builder = rows(
        {
            "grammars": {"gradsim": 0.1, "repsim": 0.2, "datainf": 0.3, "tracin": None},
            "math": {"gradsim": 0.1, "repsim": 0.2, "datainf": 0.3, "tracin": 0.4},
        }
    )
    study = rows(
        {
            "grammars": {"gradsim": 0.3, "repsim": 0.2, "datainf": 0.1, "tracin": 0.5},
            "math": {"gradsim": 0.3, "repsim": 0.2, "datainf": 0.1, "tracin": 0.5},
        }
    )
    e = entry(compare_grids(builder, study), "class attribution")
    assert e["methods"] == ["gradsim", "repsim", "datainf"]  # tracin undefined on builder grammars
    assert e["spearman"] == pytest.approx(-1.0)
    assert family_cover({("math", "response", "x"): 0.2}, "response", ["math"], ["x", "y"]) == {
        "x": 0.2
    }


def test_too_few_methods_or_all_equal_is_a_dash_with_the_reason():
    two = compare_grids(
        rows({"math": {"repsim": 0.2, "datainf": 0.3}}),
        rows({"math": {"repsim": 0.3, "datainf": 0.2}}),
    )
    e = entry(two, "class attribution")
    assert e["spearman"] is None
    assert e["spearman_reason"] == "2 method(s) with Cover on both grids; Spearman needs 3"
    assert e["ordering"] == "disagrees"  # the ordering needs only repsim and one IF

    flat = compare_grids(
        rows({"math": dict.fromkeys(("gradsim", "repsim", "lissa"), 0.5)}),
        rows({"math": {"gradsim": 0.1, "repsim": 0.2, "lissa": 0.3}}),
    )
    e = entry(flat, "class attribution")
    assert e["spearman"] is None
    assert e["spearman_reason"] == "every method has the same Cover on the builder grid"
    assert e["repsim_vs_influence"]["builder"]["sign"] == 0  # a tie; study −1: not the same
    assert e["ordering"] == "disagrees"


def test_no_repsim_or_no_influence_function():
    no_if = compare_grids(
        rows({"emotion": {"gradsim": 0.1, "repsim": 0.2, "tracin": 0.3}}),
        rows({"emotion": {"gradsim": 0.1, "repsim": 0.2, "tracin": 0.3}}),
    )
    e = entry(no_if, "class attribution")
    assert e["spearman"] == pytest.approx(1.0)
    assert e["ordering"] is None and e["ordering_reason"] == "no influence function on both grids"
    assert repsim_gap({"gradsim": 0.1, "datainf": 0.2}) is None
    no_rep = compare_grids(
        rows({"emotion": {"gradsim": 0.1, "repsim": 0.2, "datainf": 0.3}}),
        rows({"emotion": {"gradsim": 0.1, "datainf": 0.3}}),
    )
    assert entry(no_rep, "class attribution")["ordering_reason"] == "repsim not on both grids"
