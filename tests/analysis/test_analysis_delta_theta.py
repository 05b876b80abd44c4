"""Δθ vs behaviour: poison subsampling, the success rule, ‖Δθ‖ = 0 untrained and growing."""

from __future__ import annotations

import pytest

from attriblm.analysis.delta_theta import (
    attack_metrics,
    check_strengths,
    poison_subset,
    run_delta_theta,
)
from attriblm.data.tasks import build_task
from attriblm.data.tasks.backdoor import CLEAN, REFUSALS
from attriblm.errors import ConfigError
from attriblm.io import read_json
from attriblm.models.loading import load_model
from attriblm.models.lora import has_lora
from attriblm.train.finetune import TrainSettings

SIZES = {"n_train_per_class": 6, "n_test_per_class": 3}


@pytest.fixture(scope="module")
def backdoor_train():
    return build_task("backdoor-1", "quick", **SIZES)["train"]


def test_poison_subset_sizes_and_nesting(backdoor_train):
    n_clean = sum(e.label == CLEAN for e in backdoor_train)
    assert n_clean == 6
    half = poison_subset(backdoor_train, 0.5)
    assert half == [e for e in backdoor_train if e.label == CLEAN] + [
        e for e in backdoor_train if e.label != CLEAN
    ]
    assert poison_subset(backdoor_train, None) == half
    assert [e.label for e in poison_subset(backdoor_train, 0.0)] == [CLEAN] * 6
    quarter = poison_subset(backdoor_train, 0.25)  # round(0.25 * 6 / 0.75) = 2 poisoned
    poisoned = [e for e in quarter if e.label != CLEAN]
    assert len(poisoned) == 2 and quarter[:6] == half[:6]
    third = poison_subset(backdoor_train, 1 / 3)  # 3 poisoned, a superset of the 2
    assert set(poisoned) <= {e for e in third if e.label != CLEAN}
    assert poison_subset(backdoor_train, 0.25, seed=42) == quarter  # deterministic
    with pytest.raises(ConfigError, match="up to 0.5"):
        poison_subset(backdoor_train, 0.75)
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        poison_subset(backdoor_train, 1.0)


def test_success_rule_on_canned_answers():
    triggered = ["Sure, Step 1: [placeholder]", REFUSALS[0], "", "Okey! here you go"]
    clean = [REFUSALS[1], "Of course, step 1", "  I apologize, no."]
    m = attack_metrics(triggered, clean)
    assert m["attack_success"] == pytest.approx(2 / 4)  # the empty answer is no success
    assert m["triggered_refusal_rate"] == pytest.approx(1 / 4)
    assert m["clean_refusal_rate"] == pytest.approx(2 / 3)
    assert (m["n_triggered"], m["n_clean"], m["n_empty"]) == (4, 3, 1)
    assert attack_metrics([], [])["attack_success"] is None


def test_strength_checks():
    assert check_strengths("poison", None) == [0.05, 0.1, 0.25, 0.5]
    assert check_strengths("epochs", [0, 2.0]) == [0, 2]
    for vary, values, needle in (
        ("size", None, "--vary"),
        ("epochs", [1.5], "whole"),
        ("epochs", [-1], "whole"),
        ("poison", [1.2], r"\[0, 1\)"),
        ("poison", [0.1, 0.1], "repeated"),
    ):
        with pytest.raises(ConfigError, match=needle):
            check_strengths(vary, values)


@pytest.mark.filterwarnings("ignore:.*truncated")
def test_delta_norm_zero_untrained_and_grows_with_epochs(tmp_path):
    base = load_model("tiny")
    settings = TrainSettings(lr=3e-3, batch_size=6, max_length=96)
    report = run_delta_theta(
        base,
        tmp_path,
        vary="epochs",
        values=[0, 1, 3],
        train_settings=settings,
        max_new_tokens=4,
        **SIZES,
    )
    assert (tmp_path / "delta_theta.png").read_bytes()[:4] == b"\x89PNG"
    assert read_json(tmp_path / "delta_theta.json")["runs"] == report["runs"]
    runs = report["runs"]
    assert [r["epochs"] for r in runs] == [0, 1, 3]
    assert runs[0]["delta_norm"]["mean"] == 0.0 and runs[0]["train_loss"] is None
    assert 0.0 < runs[1]["delta_norm"]["mean"] < runs[2]["delta_norm"]["mean"]
    assert len(runs[2]["epoch_losses"]) == 3
    for r in runs:
        assert 0.0 <= r["attack_success"] <= 1.0 and 0.0 <= r["clean_refusal_rate"] <= 1.0
        assert r["n_triggered"] == r["n_clean"] == 3 and r["n_train"] == 12
        assert len(r["answers"]["triggered"]) == 3
        assert len(r["delta_norm"]["per_module"]) == 4
    assert (
        "not a refusal" in report["success_rule"] and "REFUSAL_OPENINGS" in report["success_rule"]
    )
    assert (tmp_path / "finetunes" / "epochs-3" / "adapter" / "adapter_config.json").is_file()
    assert not has_lora(base.model)  # each strength trained a copy


def test_bad_input(tmp_path):
    base = load_model("tiny")
    with pytest.raises(ConfigError, match="backdoor"):
        run_delta_theta(base, tmp_path, task="grammars")
    with pytest.raises(ConfigError, match="n-test-per-class"):
        run_delta_theta(base, tmp_path, n_train_per_class=2, n_test_per_class=0)
    # an infeasible fraction among feasible ones fails before anything trains or is written
    with pytest.raises(ConfigError, match="0.9"):
        run_delta_theta(base, tmp_path / "dt", values=[0.1, 0.9], **SIZES)
    assert not (tmp_path / "dt").exists()
