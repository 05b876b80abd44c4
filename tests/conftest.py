"""Shared test fixtures: study-format samples the tests make themselves, and the study's own files.

Two kinds of data:

- ``samples_dir``: made here, at test time, from the project's own task builders, in the study's
  format and with the study samples' file names and shapes: ``grammars_small/`` and
  ``math_small/`` (Hugging Face ``save_to_disk`` DatasetDicts, ``train`` 8 per class = 80 rows and
  ``test`` 2 per class = 20 rows, string fields ``prompts``, ``response``, ``variation``) and the
  same rows as ``grammars_small_{train,test}.jsonl`` / ``math_small_{train,test}.jsonl``. Every
  default test runs on these, so the suite passes on a clone of the project alone.
- ``study_samples_dir`` / ``study_data_dir``: the study's published rows in ``../shared/samples``
  and ``../shared/study-data`` beside the project. Only tests whose point is to compare with the
  study's rows use them. Where that folder is absent they are skipped, with the reason.

In CI they must run, not skip: with ``CI=true`` (or ``ATTRIBLM_REQUIRE_SHARED=1``) a missing
folder fails every test that needs it, so the run cannot go green without them. ``.ci/run``
exports ``ATTRIBLM_REQUIRE_SHARED=1`` itself, so this holds even where the CI runner does not set
``CI``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

# Under pytest-xdist (`pytest -n 2`) the workers share the cores: one thread each, and in the
# subprocesses they start, unless OMP_NUM_THREADS is set already (set before torch is imported).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED = PROJECT_ROOT.parent / "shared"
STUDY_SAMPLES = SHARED / "samples"
STUDY_DATA = SHARED / "study-data"

# Per-class sizes of the study's sample slices (10 classes each: 80 train, 20 test rows).
SAMPLE_TRAIN_PER_CLASS = 8
SAMPLE_TEST_PER_CLASS = 2
SAMPLE_SEED = 0


def shared_required() -> bool:
    """True in CI (``CI=true``) or with ``ATTRIBLM_REQUIRE_SHARED=1``: missing ../shared fails."""
    ci = os.environ.get("CI", "").strip().lower() in {"true", "1"}
    return ci or os.environ.get("ATTRIBLM_REQUIRE_SHARED", "").strip() == "1"


def require_shared(path: Path, what: str) -> Path:
    """``path`` if it is a directory; else skip (or, where required, fail) naming it and why."""
    if path.is_dir():
        return path
    reason = f"{what} not found at {path} (lay the study's ../shared folder beside the project)"
    if shared_required():
        pytest.fail(f"{reason}; required here (CI=true or ATTRIBLM_REQUIRE_SHARED=1)")
    pytest.skip(reason)


def _write_study_format(root: Path, name: str, splits: dict) -> None:
    """``root/name/`` (a save_to_disk DatasetDict) and ``root/name_<split>.jsonl``, study fields."""
    import datasets

    columns = {
        split: {
            "prompts": [e.prompt for e in rows],
            "response": [e.response for e in rows],
            "variation": [e.label for e in rows],
        }
        for split, rows in splits.items()
    }
    datasets.DatasetDict(
        {split: datasets.Dataset.from_dict(cols) for split, cols in columns.items()}
    ).save_to_disk(str(root / name))
    for split, cols in columns.items():
        rows = [dict(zip(cols, values, strict=True)) for values in zip(*cols.values(), strict=True)]
        text = "".join(json.dumps(row) + "\n" for row in rows)
        (root / f"{name}_{split}.jsonl").write_text(text, encoding="utf-8")


def build_samples(root: Path) -> Path:
    """Write the grammars and math samples (see the module docstring) under ``root``."""
    from attriblm.data.tasks import build_task

    sizes = {"n_train_per_class": SAMPLE_TRAIN_PER_CLASS, "n_test_per_class": SAMPLE_TEST_PER_CLASS}
    for task in ("grammars", "math"):
        splits = build_task(task, "quick", seed=SAMPLE_SEED, **sizes)
        _write_study_format(root, f"{task}_small", splits)
    return root


@pytest.fixture(scope="session")
def samples_dir(tmp_path_factory) -> Path:
    """Study-format grammars / math samples built by the project (80 train, 20 test rows each)."""
    return build_samples(tmp_path_factory.mktemp("samples"))


@pytest.fixture(scope="session")
def study_samples_dir() -> Path:
    """The study's sample slices, ``../shared/samples`` (skipped or, in CI, failed if absent)."""
    return require_shared(STUDY_SAMPLES, "the study's sample rows")


@pytest.fixture(scope="session")
def study_data_dir() -> Path:
    """The study's published datasets, ``../shared/study-data`` (skipped / failed as above)."""
    return require_shared(STUDY_DATA, "the study's datasets")


def _invoke_main(*args: object) -> int:
    """``attriblm ARGS`` in this process through the console entry point; the exit code."""
    from attriblm.cli import main
    from attriblm.progress import set_log_format

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["attriblm", *map(str, args)])
        try:
            main()
            return 0
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else 1
        finally:
            set_log_format("text")  # --log-json is process-wide; later tests expect bars


@dataclass
class CliResult:
    """What one ``attriblm`` invocation returned: exit code and captured output."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture(scope="session")
def attriblm_main() -> Callable[..., int]:
    """``attriblm_main(*args) -> exit code``: the CLI in this process, output not captured here
    (for module / session fixtures, which cannot use ``capsys``)."""
    return _invoke_main


@pytest.fixture
def attriblm_cli(capsys) -> Callable[..., CliResult]:
    """``attriblm_cli(*args) -> CliResult``: ``attriblm ARGS`` in this process through the
    console entry point (``cli.main``), stdout and stderr captured.

    The same code path as the installed script without a new interpreter (about 4 s of CPU for
    imports saved per call); tests/test_cli.py keeps real ``python -m attriblm`` subprocesses.
    """

    def run(*args: object) -> CliResult:
        capsys.readouterr()  # drop what the test's own set-up printed
        code = _invoke_main(*args)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run
