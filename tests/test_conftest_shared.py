"""tests/conftest.py's rule for the study's ../shared folder: skip where it is absent, fail where
CI requires it (CI=true or ATTRIBLM_REQUIRE_SHARED=1), so CI cannot go green on skipped tests.

Each case runs pytest in a fresh process on a throw-away project holding a copy of the conftest
and one test that needs ``study_samples_dir`` (no torch is imported: about a second each).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
NEEDS_STUDY = """\
def test_needs_the_study(study_samples_dir):
    assert study_samples_dir.is_dir()
"""


def _summary(result: subprocess.CompletedProcess) -> str:
    """pytest's last line, e.g. ``1 skipped in 0.51s``."""
    return result.stdout.strip().splitlines()[-1]


def _pytest(root: Path, **env: str) -> subprocess.CompletedProcess:
    """pytest on ``root/project`` with the environment's CI switches replaced by ``env``."""
    project = root / "project"
    (project / "tests").mkdir(parents=True, exist_ok=True)
    shutil.copy(TESTS / "conftest.py", project / "tests" / "conftest.py")
    (project / "tests" / "test_needs_study.py").write_text(NEEDS_STUDY, encoding="utf-8")
    (project / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    clean = {k: v for k, v in os.environ.items() if k not in {"CI", "ATTRIBLM_REQUIRE_SHARED"}}
    clean = {k: v for k, v in clean.items() if not k.startswith(("PYTEST_", "COV_"))}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests"],
        cwd=project,
        env={**clean, "COLUMNS": "500", **env},  # wide: summary lines are not shortened
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_absent_shared_folder_skips_with_the_reason(tmp_path):
    result = _pytest(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _summary(result).startswith("1 skipped in")
    assert f"not found at {tmp_path / 'shared' / 'samples'}" in result.stdout


@pytest.mark.parametrize("env", [{"CI": "true"}, {"ATTRIBLM_REQUIRE_SHARED": "1"}])
def test_absent_shared_folder_fails_where_required(tmp_path, env):
    result = _pytest(tmp_path, **env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert _summary(result).startswith("1 error in")
    assert "required here" in result.stdout


def test_present_shared_folder_runs_the_test(tmp_path):
    (tmp_path / "shared" / "samples").mkdir(parents=True)
    result = _pytest(tmp_path, ATTRIBLM_REQUIRE_SHARED="1")
    assert result.returncode == 0 and _summary(result).startswith("1 passed in"), result.stdout


def test_ci_entry_point_requires_the_shared_folder():
    script = (TESTS.parent / ".ci" / "run").read_text(encoding="utf-8")
    lines = [line.strip() for line in script.splitlines()]
    assert "export ATTRIBLM_REQUIRE_SHARED=1" in lines
    assert lines.index("export ATTRIBLM_REQUIRE_SHARED=1") < lines.index("make test")
