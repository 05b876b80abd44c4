"""benchmarks/run_diagnoses.sh on tiny, then its RESULTS.md sections (attriblm.analysis.summary)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from attriblm.analysis.summary import SECTIONS, diagnoses_markdown
from attriblm.io import read_json

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "run_diagnoses.sh"
STEPS = ["theorem1", "finetune-harmful-s", *[s for s in SECTIONS if s != "theorem1"]]


def _venv_env() -> dict[str, str]:
    """The environment with this interpreter's bin directory (attriblm, python3) first on PATH,
    as in an activated virtual environment (`make test` runs .venv/bin/python directly)."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}


@pytest.fixture(scope="module")
def diag_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("diag") / "diag"
    small = {"MODEL": "tiny", "N_SUBSETS": "3", "EPOCH_VALUES": "0,1", "SUBSET_EPOCHS": "1"}
    env = {**_venv_env(), **small, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        ["bash", str(SCRIPT), str(out)], capture_output=True, text=True, env=env, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_every_step_runs_once_and_a_rerun_skips_them(diag_dir):
    timings = read_json(diag_dir / "timings.json")
    assert set(STEPS) <= set(timings)
    assert all(seconds >= 0 for seconds in timings.values())
    env = {**_venv_env(), "MODEL": "tiny"}
    again = subprocess.run(
        ["bash", str(SCRIPT), str(diag_dir)], capture_output=True, text=True, env=env, timeout=300
    )
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("done before, skipped") == len(STEPS)


def test_markdown_has_a_section_per_diagnosis(diag_dir, tmp_path):
    timings = read_json(diag_dir / "timings.json")
    text = diagnoses_markdown(diag_dir, tmp_path / "img", timings=timings, shown_dir="diag")
    for folder, (_name, title) in SECTIONS.items():
        assert f"### {title}" in text
        assert (tmp_path / "img" / f"diag-{folder}.png").stat().st_size > 1000
    assert text.count("**Reading.**") == len(SECTIONS)
    assert "Not run" not in text
    assert str(diag_dir) not in text  # commands show the shown_dir
    assert "attriblm analyze delta-theta" in text and "--vary epochs" in text


def test_missing_diagnoses_are_listed(tmp_path):
    text = diagnoses_markdown(tmp_path, tmp_path / "img")
    assert text.strip().startswith("Not run:") and "counterfactual" in text
