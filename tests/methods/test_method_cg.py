from __future__ import annotations

import pytest
import torch

from attriblm.errors import ConfigError
from attriblm.methods import Damping, create_method


def test_cg_matches_exact(features, rel_err):
    train, queries = features
    exact = create_method("exact").score(train, queries)
    cg = create_method("cg").score(train, queries)
    assert rel_err(cg.scores, exact.scores) < 1e-4
    u_exact, _ = create_method("exact").preconditioned(train, queries)
    u_cg, info = create_method("cg").preconditioned(train, queries)
    for block, expected in u_exact.items():
        assert rel_err(u_cg[block], expected) < 1e-4, block


def test_cg_reports_iterations_and_residual(features):
    train, queries = features
    info = (
        create_method("cg", damping=Damping("absolute", 0.05), tol=1e-9).score(train, queries).info
    )
    assert info["method"] == "cg" and info["converged"] is True
    assert info["options"]["tol"] == 1e-9
    for facts in info["blocks"].values():
        assert facts["path"] == "cg"
        assert facts["iterations"] >= 1
        assert facts["residual"] < 1e-8
    assert set(info["lambda"]) == set(train.grads)


def test_cg_iteration_cap_warns(features):
    train, queries = features
    with pytest.warns(RuntimeWarning, match="did not reach"):
        info = create_method("cg", max_iter=1).score(train, queries).info
    assert info["converged"] is False and info["max_iterations"] == 1
    assert torch.isfinite(torch.tensor(info["max_residual"]))


def test_cg_rejects_bad_options():
    with pytest.raises(ConfigError):
        create_method("cg", tol=0.0)
    with pytest.raises(ConfigError):
        create_method("cg", max_iter=0)
