"""The README's Python API example runs as written (on the real default model)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_api_example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the Python API section should hold exactly one python block"
    return blocks[0]


def test_the_example_is_found_and_uses_the_public_api():
    code = readme_api_example()
    assert "import attriblm" in code and "attriblm.attribute(" in code


@pytest.mark.integration
def test_readme_example_runs_as_written(tmp_path):
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", readme_api_example()],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert "(10, 20)" in lines
    rows = [line for line in lines if " Acc " in line]
    assert [row.split()[0] for row in rows] == ["gradsim", "datainf", "repsim"]
    assert (tmp_path / "api-demo" / "run" / "metrics.json").is_file()
