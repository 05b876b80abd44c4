from __future__ import annotations

import pytest
import torch

from attriblm.errors import ConfigError
from attriblm.metrics.pooled import capped_ks, pooled_topk

LABELS = ["t", "c", "t", "c", "c"]
SCORES = torch.tensor(
    [
        [0.9, 0.8, 0.1, 0.7, 0.2],  # order 0 t, 1 c, 3 c, 4 c, 2 t
        [0.1, 0.2, 0.85, 0.3, 0.92],  # order 4 c, 2 t, 3 c, 1 c, 0 t
    ]
)


def test_hand_made_case():
    report = pooled_topk(SCORES, LABELS, "t", ks=(2, 3, 10))
    assert report["n_target"] == 2 and report["n_query"] == 2
    assert list(report["k"]) == ["2", "3", "5"]  # 10 is capped at n_train = 5
    k2, k3, k5 = (report["k"][k] for k in ("2", "3", "5"))
    # pool k=2: .92 c, .9 t, .85 t, .8 c -> precision 2/4, AP = (1/2 + 2/3) / 2
    assert k2["precision"] == pytest.approx(0.5)
    assert k2["auprc"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert (k2["n_pooled"], k2["n_relevant"]) == (4, 2)
    # k=3 adds .7 c and .3 c below every relevant pair: AP unchanged, precision 2/6
    assert k3["precision"] == pytest.approx(2 / 6)
    assert k3["auprc"] == pytest.approx(k2["auprc"])
    # k=5: all 10 pairs; the two relevant .1 pairs tie: recall jumps 1/2 -> 1 at precision 4/10
    assert k5["precision"] == pytest.approx(0.4)
    assert k5["auprc"] == pytest.approx(0.25 * 1 / 2 + 0.25 * 2 / 3 + 0.5 * 4 / 10)


def test_no_relevant_row_in_the_pool_gives_no_auprc():
    report = pooled_topk(SCORES[:1], LABELS, "t", ks=(1,))
    assert report["k"]["1"]["auprc"] == pytest.approx(1.0)  # q0's top row is a target row
    report = pooled_topk(torch.tensor([[0.0, 1.0, 0.0, 0.9, 0.8]]), LABELS, "t", ks=(2,))
    assert report["k"]["2"] == {"precision": 0.0, "auprc": None, "n_pooled": 2, "n_relevant": 0}


def test_unknown_target_label_is_a_config_error():
    with pytest.raises(ConfigError, match="--target-label 'x'.*labels: \\['c', 't'\\]"):
        pooled_topk(SCORES, LABELS, "x")


def test_capped_ks():
    assert capped_ks(30) == [10, 30] and capped_ks(500) == [10, 50, 100]
