"""The report in a real browser: headless Chromium renders it offline (screenshot and DOM).

Chromium is Debian's package at /usr/bin/chromium, installed by `make setup`. Its absence is a
failure, not a skip: the report's promise is that it renders in a browser.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from attriblm.report.html import render_report

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str:
    found = CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium")
    if found is None:
        pytest.fail(
            f"chromium not found at {CHROMIUM}: run `make setup` "
            "(or `apt-get install -y chromium`) to install it"
        )
    return found


def _run(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [_chromium(), *FLAGS, f"--user-data-dir={tmp / 'profile'}", *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp,
    )


@pytest.fixture(scope="module")
def report_file(report_run, tmp_path_factory) -> Path:
    return render_report(report_run, tmp_path_factory.mktemp("browser") / "report.html", k=3)


def test_chromium_screenshot_is_not_blank(report_file, tmp_path):
    shot = tmp_path / "shot.png"
    result = _run(
        [f"--screenshot={shot}", "--window-size=1280,2000", report_file.as_uri()], tmp_path
    )
    assert shot.is_file(), f"no screenshot (exit {result.returncode}): {result.stderr[-2000:]}"
    assert shot.stat().st_size > 20_000
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1280, 2000)
        colours = image.convert("RGB").getcolors(maxcolors=1_000_000)
    assert colours is None or len(colours) > 50  # text, tables and marks, not one flat colour


def test_chromium_dom_has_metrics_and_topk(report_file, tmp_path):
    result = _run(["--dump-dom", report_file.as_uri()], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    assert '<table class="metrics" id="metrics">' in dom
    assert '<ol class="topk" data-method="gradsim">' in dom
    assert 'id="query-1"' in dom and "✓ correct" in dom
