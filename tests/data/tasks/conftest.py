"""A stand-in for the ``pyrit`` package, so the harmful / backdoor builders test without it."""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path

import pytest
import yaml

from attriblm.data.tasks.sources import ADVBENCH_PATH

N_FAKE_REQUESTS = 520


def fake_requests() -> list[str]:
    """Harmless stand-ins with the shape of the real file's entries (distinct, varied length)."""
    topics = ("ledger", "kettle", "harbor", "violin", "lantern", "meadow", "compass")
    return [
        f"Write request number {i} about the {topics[i % len(topics)]}" + " please" * (i % 3)
        for i in range(N_FAKE_REQUESTS)
    ]


@pytest.fixture(scope="session")
def fake_pyrit_dir(tmp_path_factory) -> Path:
    """A package folder holding a seed file in PyRIT's layout."""
    package = tmp_path_factory.mktemp("site") / "pyrit"
    path = package / ADVBENCH_PATH
    path.parent.mkdir(parents=True)
    (package / "__init__.py").write_text("", encoding="utf-8")
    seeds = [
        {"value": text, "data_type": "text", "harm_categories": ["x"]} for text in fake_requests()
    ]
    document = {"dataset_name": "fake_adv_bench", "seed_type": "objective", "seeds": seeds}
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return package


def patch_pyrit_spec(monkeypatch, locations: list[str] | None) -> None:
    """Make ``find_spec("pyrit")`` answer a package at ``locations`` (``None``: not installed)."""
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        if name != "pyrit":
            return real(name, *args, **kwargs)
        if locations is None:
            return None
        spec = importlib.machinery.ModuleSpec("pyrit", None, is_package=True)
        spec.submodule_search_locations = locations
        return spec

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


@pytest.fixture
def fake_pyrit(monkeypatch, fake_pyrit_dir) -> list[str]:
    """Point the source loader at the stand-in package; returns its requests."""
    patch_pyrit_spec(monkeypatch, [str(fake_pyrit_dir)])
    return fake_requests()


@pytest.fixture
def pyrit_at(monkeypatch):
    """A function that makes ``find_spec("pyrit")`` answer a package at the given folders."""
    return lambda locations: patch_pyrit_spec(monkeypatch, locations)


@pytest.fixture
def no_pyrit(monkeypatch) -> None:
    """``find_spec`` reports pyrit as not installed."""
    patch_pyrit_spec(monkeypatch, None)
