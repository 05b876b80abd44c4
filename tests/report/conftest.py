"""A tiny attribution run (3 methods), a tiny trace run, bench and analyze layouts, and a small
HTML tree parser."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

from attriblm.data.loaders import load_examples
from attriblm.io import write_json
from attriblm.models.loading import load_model
from attriblm.pipeline.attribute import AttributeSettings, attribute
from attriblm.pipeline.bench import write_results
from attriblm.pipeline.evaluate import evaluate_run
from attriblm.train.finetune import TrainSettings, finetune

METHODS = ["gradsim", "datainf", "repsim"]
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}


@pytest.fixture(scope="session")
def report_adapter(tmp_path_factory, samples_dir) -> Path:
    """The tiny model fine-tuned one epoch on the grammars sample (its LoRA adapter)."""
    train = load_examples(f"{samples_dir / 'grammars_small'}:train")
    tuned = finetune(
        load_model("tiny"),
        train,
        TrainSettings(epochs=1, lr=1e-3, batch_size=16),
        tmp_path_factory.mktemp("report-ft"),
    )
    return tuned.adapter_dir


@pytest.fixture(scope="session")
def report_run(tmp_path_factory, samples_dir, report_adapter) -> Path:
    """A run directory on the tiny model: grammars sample (80 train, 20 queries), 3 methods."""
    root = tmp_path_factory.mktemp("report-run")
    spec = str(samples_dir / "grammars_small")
    train = load_examples(f"{spec}:train")
    queries = load_examples(f"{spec}:test")
    out = root / "run"
    attribute(
        load_model("tiny", adapter=report_adapter),
        train,
        queries,
        AttributeSettings(methods=METHODS),
        out,
        sources={"train": f"{spec}:train", "queries": f"{spec}:test"},
    )
    return out


TRACE_METHODS = ["gradsim", "repsim"]


@pytest.fixture(scope="session")
def trace_run(tmp_path_factory, samples_dir, report_adapter) -> Path:
    """A ``trace`` run on the tiny model: 6 prompts, a detector that keeps some but not all.

    The detector is ``contains:`` the first generation, computed beforehand exactly as
    ``trace`` computes it (greedy, same batches), so prompt 1 is kept; the tests assert that
    some prompt is not.
    """
    from attriblm.analysis.generation import generate_answers
    from attriblm.pipeline.trace import TraceSettings, trace

    spec = str(samples_dir / "grammars_small")
    train = load_examples(f"{spec}:train")[::4]
    prompts = [e.prompt for e in load_examples(f"{spec}:test")[:6]]
    loaded = load_model("tiny", adapter=report_adapter)
    gen = {"max_new_tokens": 6, "gen_batch_size": 3}
    settings = AttributeSettings(methods=TRACE_METHODS)
    first = generate_answers(
        loaded,
        prompts,
        template=settings.template,
        max_new_tokens=6,
        batch_size=3,
        max_length=settings.max_length,
    )[0]
    out = tmp_path_factory.mktemp("trace-run") / "run"
    trace(
        loaded,
        train,
        prompts,
        settings,
        TraceSettings(detect=f"contains:{first}", target_label=train[0].label, **gen),
        out,
    )
    return out


def _plot(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 2], [1, 0, 2])
    fig.savefig(path, dpi=60)
    plt.close(fig)


@pytest.fixture(scope="session")
def evaluated_run(tmp_path_factory, report_run) -> Path:
    """A copy of the run with metrics.json (``evaluate``) and one PNG plot."""
    out = tmp_path_factory.mktemp("evaluated") / "run"
    shutil.copytree(report_run, out)
    evaluate_run(out, n_boot=50)
    _plot(out / "loss.png")
    return out


@pytest.fixture(scope="session")
def bench_dir(tmp_path_factory, report_run) -> Path:
    """A bench layout around the tiny run; metrics.json records a path the bench moved from."""
    out = tmp_path_factory.mktemp("bench") / "bench"
    run_dir = out / "cache" / "runs" / "abc123"
    shutil.copytree(report_run, run_dir)
    report = evaluate_run(run_dir, n_boot=50)
    report.update(
        {"run": "/elsewhere/bench/cache/runs/abc123", "task": "grammars", "loss_mask": "response"}
    )
    write_json(out / "grammars" / "response" / "metrics.json", report)
    rows = [
        {
            "task": "grammars",
            "loss_mask": "response",
            "method": name,
            "acc": m["acc"]["value"],
            "cover": m["cover"]["value"],
            "cover_k": m["cover"]["k"],
            "auprc": m["auprc"]["value"],
            "auroc": m["auroc"]["value"],
            "cover_n_harmful": None,
            "seconds": m.get("seconds"),
        }
        for name, m in report["methods"].items()
    ]
    write_results(out, rows, METHODS, ["grammars"], ["response"])
    return out


@pytest.fixture(scope="session")
def analyze_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("analyze")
    write_json(out / "summary.json", {"theorem1": {"n": [128, 512], "error": [0.1, 0.05]}})
    _plot(out / "theorem1.png")
    return out


@dataclass
class Node:
    """An element of a parsed HTML page."""

    tag: str
    attrs: dict[str, str]
    children: list[Node] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def text(self) -> str:
        return "".join(self.parts) + "".join(c.text() for c in self.children)

    def iter(self):
        yield self
        for child in self.children:
            yield from child.iter()

    def find_all(self, tag: str | None = None, cls: str | None = None, **attrs: str):
        for node in self.iter():
            if tag is not None and node.tag != tag:
                continue
            if cls is not None and cls not in node.classes:
                continue
            if any(node.attrs.get(k.replace("_", "-")) != v for k, v in attrs.items()):
                continue
            yield node

    def find(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> Node | None:
        return next(self.find_all(tag, cls, **attrs), None)


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data):
        # Text is kept on the innermost open element, in document order within that element.
        self.stack[-1].children.append(Node("#text", {}, parts=[data]))


def parse(text: str) -> Node:
    builder = _TreeBuilder()
    builder.feed(text)
    builder.close()
    return builder.root


@pytest.fixture(scope="session")
def run_methods() -> list[str]:
    """The methods of ``report_run``, in run order."""
    return list(METHODS)


@pytest.fixture(scope="session")
def trace_methods() -> list[str]:
    """The methods of ``trace_run``, in run order."""
    return list(TRACE_METHODS)


@pytest.fixture(scope="session")
def parse_html() -> Callable[[str], Node]:
    return parse
