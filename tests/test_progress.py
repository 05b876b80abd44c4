"""Progress output: plain lines off a terminal, JSON lines on request, one-line warnings."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import pytest

from attriblm import progress as progress_module
from attriblm.progress import no_progress, set_log_format, stage_progress


@pytest.fixture(autouse=True)
def _text_format():
    set_log_format("text")
    yield
    set_log_format("text")


def _drive(make, total: int = 5) -> None:
    advance = make("fine-tuning", total)
    for _ in range(total):
        advance(1)


def test_plain_lines_when_stderr_is_not_a_terminal(capsys, monkeypatch):
    monkeypatch.setattr(progress_module.stderr_console, "_force_terminal", False)
    assert not progress_module.stderr_console.is_terminal
    with stage_progress(True) as make:
        _drive(make)
    lines = capsys.readouterr().err.splitlines()
    # every step falls inside the first interval; completion always prints
    assert len(lines) == 1
    assert lines[-1].startswith("fine-tuning: 5/5 (100%) ")
    assert "/s elapsed " in lines[-1] and "…" not in lines[-1]


def test_plain_lines_never_cut_to_a_width(capsys, monkeypatch):
    monkeypatch.setattr(progress_module.stderr_console, "_force_terminal", False)
    description = "per-example gradients (train, a long stage name) " * 3
    with stage_progress(True) as make:
        make(description, 1)(1)
    err = capsys.readouterr().err
    assert err.startswith(description) and err.rstrip().endswith("s")


def test_plain_lines_come_once_per_interval(capsys, monkeypatch):
    monkeypatch.setattr(progress_module.stderr_console, "_force_terminal", False)
    monkeypatch.setattr(progress_module, "PLAIN_INTERVAL_S", 0.0)
    with stage_progress(True) as make:
        _drive(make, total=3)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in lines] == [f"fine-tuning: {i}/3" for i in (1, 2, 3)]


def test_json_lines(capsys):
    set_log_format("json")
    with stage_progress(True) as make:
        _drive(make)
    records = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert records[-1]["done"] == records[-1]["total"] == 5
    assert records[-1]["stage"] == "fine-tuning" and records[-1]["rate_per_s"] > 0


def test_quiet_shows_no_progress_but_keeps_warnings(capsys):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with stage_progress(False) as make:
            _drive(make)
            warnings.warn("inside a quiet stage", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["inside a quiet stage"]
    assert capsys.readouterr().err == ""


def test_no_progress_is_silent_and_what_quiet_yields(capsys):
    advance = no_progress("fine-tuning", 3)
    assert advance(1) is None and advance(2) is None
    assert capsys.readouterr() == ("", "")
    with stage_progress(False) as make:
        assert make is no_progress


def test_library_defaults_share_no_progress():
    import inspect

    from attriblm.analysis.counterfactual import run_counterfactual
    from attriblm.analysis.theorem1 import run_theorem1
    from attriblm.pipeline.attribute import attribute

    for function in (run_counterfactual, run_theorem1, attribute):
        assert inspect.signature(function).parameters["progress"].default is no_progress


def test_cli_warnings_are_one_line_without_source_echo():
    code = (
        "import sys, warnings; from attriblm.progress import one_line_warnings; "
        "one_line_warnings(); "
        "warnings.warn('first line\\nsecond line', UserWarning, stacklevel=1)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stderr == "attriblm: UserWarning: first line second line\n"
