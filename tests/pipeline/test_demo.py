"""`attriblm demo`'s pipeline on the tiny model: it ends with a report and next steps."""

from __future__ import annotations

from attriblm.pipeline.attribute import AttributeSettings
from attriblm.pipeline.demo import REPORT_FILE, DemoSettings, next_steps, run_demo
from attriblm.train.finetune import TrainSettings


def test_demo_writes_run_report_and_timings(tmp_path):
    settings = DemoSettings(
        train=TrainSettings(epochs=1, lr=5e-4, batch_size=16),
        attribute=AttributeSettings(methods=["gradsim", "repsim"]),
    )
    report = run_demo(tmp_path / "demo", model="tiny", settings=settings)
    assert set(report["methods"]) == {"gradsim", "repsim"}
    html = (tmp_path / "demo" / REPORT_FILE).read_text(encoding="utf-8")
    assert "gradsim" in html and "<html" in html.lower()
    assert (tmp_path / "demo" / "run" / "metrics.json").is_file()
    assert (tmp_path / "demo" / "demo.json").is_file()


def test_next_steps_point_at_the_demo_run_and_own_data(tmp_path):
    steps = next_steps(tmp_path / "demo")
    assert steps[0].startswith(f"attriblm inspect {tmp_path / 'demo' / 'run'}")
    assert any("attribute" in step and "--adapter ft" in step for step in steps)
