from __future__ import annotations

import sys

import pytest

from attriblm.analysis.layer_sweep import resolve_layers, run_layer_sweep
from attriblm.cli import main
from attriblm.errors import ConfigError
from attriblm.io import read_json
from attriblm.metrics.ranking import evaluate_scores
from attriblm.pipeline.attribute import AttributeSettings, attribute


@pytest.fixture(scope="module")
def sweep(tiny_finetune, tmp_path_factory):
    ft = tiny_finetune
    out = tmp_path_factory.mktemp("sweep")
    return run_layer_sweep(ft.loaded, ft.train, ft.queries, out, n_boot=20), out


def test_one_pass_equals_one_attribute_run_per_layer(sweep, tiny_finetune, tmp_path):
    report, _ = sweep
    ft = tiny_finetune
    assert report["layers"] == [1, 2] and report["n_layers"] == 2
    labels = ([e.label for e in ft.queries], [e.label for e in ft.train])
    for row in report["rows"]:
        settings = AttributeSettings(
            methods=["rept", "repsim"], rept_layer=row["layer"], repsim_layer=row["layer"]
        )
        run = attribute(ft.loaded, ft.train, ft.queries, settings, tmp_path / f"l{row['layer']}")
        for name in ("rept", "repsim"):
            expected = evaluate_scores(run.scores[name], *labels, n_boot=20)
            for metric in ("acc", "cover", "auprc"):
                assert row[name][metric]["value"] == pytest.approx(
                    expected[metric]["value"], abs=1e-6
                ), (row["layer"], name, metric)


def test_report_plot_and_best_layers(sweep):
    report, out = sweep
    assert (out / "layer_sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert read_json(out / "layer_sweep.json") == report
    for name in ("rept", "repsim"):
        best = report["best_layer"][name]["auprc"]
        values = {row["layer"]: row[name]["auprc"]["value"] for row in report["rows"]}
        assert values[best] == max(values.values())


def test_layers_are_checked_and_labels_required(tiny_finetune, tmp_path):
    assert resolve_layers(None, 3) == [1, 2, 3] and resolve_layers([-1, 1], 3) == [1, 3]
    with pytest.raises(ConfigError, match="--layers"):
        resolve_layers([4], 3)
    ft = tiny_finetune
    unlabelled = [type(e)(e.prompt, e.response, None) for e in ft.queries]
    with pytest.raises(ConfigError, match="no label"):
        run_layer_sweep(ft.loaded, ft.train, unlabelled, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_cli_layer_sweep(tiny_finetune, tmp_path, monkeypatch, capsys):
    ft = tiny_finetune
    base = [
        "attriblm", "analyze", "layer-sweep", "--model", "tiny",
        "--adapter", str(ft.out_dir / "adapter"), "--train", str(ft.train_file),
        "--queries", str(ft.queries_file), "--out", str(tmp_path), "--n-boot", "5", "--quiet",
    ]  # fmt: skip
    monkeypatch.setattr(sys, "argv", [*base, "--layers", "2"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 0
    assert read_json(tmp_path / "layer_sweep.json")["layers"] == [2]
    assert "best layer by AUPRC" in capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", [*base, "--layers", "7"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "--layers" in err[0]
