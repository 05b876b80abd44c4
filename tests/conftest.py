"""Shared test fixtures: paths to the study-format samples in ../shared/samples."""

from __future__ import annotations

from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SAMPLES = PROJECT_ROOT.parent / "shared" / "samples"


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    if not SAMPLES.is_dir():
        pytest.fail(f"study samples not found at {SAMPLES} (CI lays ../shared beside the clone)")
    return SAMPLES
