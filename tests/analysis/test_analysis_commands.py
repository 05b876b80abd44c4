"""``attriblm analyze ...`` end to end: exit 0 with JSON + PNG; bad input → one line, exit 2."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from attriblm.cli import main
from attriblm.io import read_json


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def run_cli(monkeypatch, capsys):
    """Run ``attriblm analyze ARGS`` in this process through the console entry point."""

    def run(*args: str) -> Result:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["attriblm", "analyze", *args])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def assert_outputs(out: Path, name: str) -> dict:
    assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    return read_json(out / f"{name}.json")


def assert_one_line_error(result: Result, needle: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert needle in lines[0], lines[0]


def test_theorem1(run_cli, tmp_path):
    result = run_cli(
        "theorem1", "--out", str(tmp_path), "--dims", "32,64", "--ranks", "0.0625,0.25,0.5"
    )
    assert result.returncode == 0, result.stderr
    report = assert_outputs(tmp_path, "theorem1")
    assert report["settings"]["dims"] == [32, 64]
    assert report["all_within_bound"] is True
    assert len(report["rank_sweep"]) == 6


def test_theorem1_on_a_fine_tuned_models_query_gradients(run_cli, tiny_finetune, tmp_path):
    ft = tiny_finetune
    result = run_cli(
        "theorem1", "--out", str(tmp_path), "--dims", "32", "--ranks", "0.25", "--n-vectors", "4",
        *_model_args(ft), "--adapter", str(ft.out_dir / "adapter"), "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = assert_outputs(tmp_path, "theorem1")
    assert report["settings"]["n_vectors"] == 4
    assert report["gradients"]["n_query"] == len(ft.queries)
    assert report["gradients"]["train"] == str(ft.train_file)
    assert "query gradients: error" in result.stdout


def _model_args(ft) -> list[str]:
    return ["--model", "tiny", "--train", str(ft.train_file), "--queries", str(ft.queries_file)]


def test_ihvp_error(run_cli, tiny_finetune, tmp_path):
    ft = tiny_finetune
    result = run_cli(
        "ihvp-error",
        *_model_args(ft),
        "--adapter",
        str(ft.out_dir / "adapter"),
        "-m",
        "exact",
        "-m",
        "gradsim",
        "--out",
        str(tmp_path),
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    report = assert_outputs(tmp_path, "ihvp_error")
    assert list(report["methods"]) == ["exact", "gradsim"]
    assert report["methods"]["exact"]["rel_error"] == pytest.approx(0.0, abs=1e-12)
    assert report["n_train"] == len(ft.train)


def test_convergence_without_init(run_cli, tiny_finetune, tmp_path):
    ft = tiny_finetune
    result = run_cli(
        "convergence",
        *_model_args(ft),
        "--finetune",
        str(ft.out_dir),
        "-m",
        "gradsim",
        "--no-init",
        "--n-boot",
        "10",
        "--out",
        str(tmp_path),
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    report = assert_outputs(tmp_path, "convergence")
    assert [row["epoch"] for row in report["epochs"]] == [1, 2]
    assert report["settings"]["include_init"] is False


def test_bad_input_exits_2_with_one_line(run_cli, tiny_finetune, tmp_path):
    ft = tiny_finetune
    assert_one_line_error(run_cli("theorem1", "--out", str(tmp_path), "--ranks", "2"), "--ranks")
    assert_one_line_error(run_cli("theorem1", "--out", str(tmp_path), "--dims", "x,y"), "--dims")
    only_train = ["--train", str(ft.train_file)]
    assert_one_line_error(run_cli("theorem1", "--out", str(tmp_path), *only_train), "--queries")
    assert_one_line_error(
        run_cli("theorem1", "--out", str(tmp_path), "--model", "tiny"), "--model/--adapter"
    )
    assert_one_line_error(
        run_cli("ihvp-error", *_model_args(ft), "-m", "repsim", "--out", str(tmp_path)),
        "repsim",
    )
    missing = tmp_path / "no-such-finetune"
    assert_one_line_error(
        run_cli(
            "convergence", *_model_args(ft), "--finetune", str(missing), "--out", str(tmp_path)
        ),
        str(missing),
    )
    assert not (tmp_path / "theorem1.json").exists()


STORE_FLAGS = ["--store-dtype", "bf16", "--keep-store"]
ADAPTER = ["--adapter", "{ft}/adapter"]
# command, its run function (attriblm.analysis.MODULE.NAME), extra arguments, its --option
SETTINGS_CASES = [
    ("ihvp-error", "ihvp_error.run_ihvp_error", ["-m", "lissa", *ADAPTER], "lissa.max_iter=7"),
    (
        "convergence",
        "convergence.run_convergence",
        ["-m", "lissa", "--finetune", "{ft}"],
        "lissa.max_iter=7",
    ),
    ("subset-retrain", "subset_retrain.run_subset_retrain", ["-m", "lissa"], "lissa.max_iter=7"),
    ("counterfactual", "counterfactual.run_counterfactual", ["-m", "lissa"], "lissa.max_iter=7"),
    ("theorem1", "theorem1.run_theorem1", ["--dims", "32", *ADAPTER], "exact.solver=cg"),
    ("layer-sweep", "layer_sweep.run_layer_sweep", ADAPTER, None),
]


@pytest.mark.parametrize(
    ("command", "target", "extra", "option"), SETTINGS_CASES, ids=[c[0] for c in SETTINGS_CASES]
)
def test_attribution_flags_reach_the_run_functions_settings(
    run_cli, tiny_finetune, tmp_path, monkeypatch, command, target, extra, option
):
    """Every analyze command that attributes passes attribute's flags in ``settings=``."""
    from attriblm.errors import ConfigError

    seen = []

    def capture(*_args, settings, **_kwargs):
        seen.append(settings)
        raise ConfigError("captured")

    module, name = target.split(".")
    monkeypatch.setattr(f"attriblm.analysis.{module}.{name}", capture)
    ft = tiny_finetune
    args = [command, *_model_args(ft), *(a.format(ft=ft.out_dir) for a in extra)]
    args += [*STORE_FLAGS, "--store", str(tmp_path / "s")]
    if option is not None:  # layer-sweep takes no projection and no method options
        args += ["--proj-dim", "64", "--option", option]
    assert_one_line_error(run_cli(*args, "--out", str(tmp_path / "out")), "captured")
    (settings,) = seen
    assert settings.store == str(tmp_path / "s")
    assert settings.store_dtype == "bf16" and settings.keep_store is True
    if option is not None:
        method, _, key_value = option.partition(".")
        key, _, value = key_value.partition("=")
        assert settings.proj_dim == 64
        assert settings.options == {method: {key: int(value) if value.isdigit() else value}}
