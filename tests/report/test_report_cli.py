"""`attriblm report` and `attriblm inspect` as a user runs them: exit 0, or one line and exit 2.

The commands run in this process through the console entry point (the ``attriblm_cli`` fixture,
tests/conftest.py); tests/test_cli.py covers the installed script as a subprocess.
"""

from __future__ import annotations

from typer.testing import CliRunner

from attriblm.cli import app


def _one_line_error(result, *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_report_command_writes_html(report_run, tmp_path, attriblm_cli):
    out = tmp_path / "x.html"
    result = attriblm_cli("report", str(report_run), "--out", str(out), "--k", "3")
    assert result.returncode == 0, result.stderr
    # rich wraps the console at 80 columns when stdout is not a terminal (long tmp paths)
    assert f"wrote{out}" in "".join(result.stdout.split())
    text = out.read_text(encoding="utf-8")
    assert '<table class="metrics" id="metrics">' in text
    assert text.count('<li class="hit') == 20 * 3 * 3


def test_report_command_on_a_bad_directory_exits_2(tmp_path, attriblm_cli):
    (tmp_path / "notes.txt").write_text("x")
    _one_line_error(
        attriblm_cli("report", str(tmp_path), "--out", str(tmp_path / "r.html")), str(tmp_path)
    )
    assert not (tmp_path / "r.html").exists()


def test_inspect_command_is_one_based(report_run, attriblm_cli):
    result = attriblm_cli("inspect", str(report_run), "--query", "20", "--k", "2")
    assert result.returncode == 0, result.stderr
    assert "query row 20" in result.stdout
    _one_line_error(
        attriblm_cli("inspect", str(report_run), "--query", "21"), "--query 21", "1 to 20"
    )
    _one_line_error(attriblm_cli("inspect", str(report_run), "--query", "0"), "--query 0")


def test_commands_are_registered_with_help():
    runner = CliRunner()
    for name, needle in (("report", "RUN_OR_BENCH_DIR"), ("inspect", "1-based")):
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0, result.output
        assert needle in result.output
