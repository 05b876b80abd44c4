"""One self-contained HTML report for a run, a ``bench`` or an ``analyze`` directory.

The page has inline CSS, images as base64 ``data:`` URIs, no scripts and no network resources:
it opens from disk, mails as one file and prints. All user text is escaped.

Stable hooks (for tests and for readers of the HTML):

* ``table#metrics`` (a run's metrics; every metrics table has class ``metrics``),
  ``pre#config``, ``table#agreement`` (mean pairwise top-k overlap ``|A ∩ B| / k``),
  ``section#queries`` with one ``details.query`` per query (``id="query-N"``, N 1-based),
  inside it ``ol.topk[data-method=NAME]`` whose ``li.hit`` items carry ``data-rank``,
  ``data-index`` (0-based train index), ``data-label`` and the class ``correct`` /
  ``incorrect`` / ``unknown`` (the training example has / has not the query's label).
* A ``trace`` run (with ``generations.jsonl``) also has ``section#generations``: one
  ``details.generation`` per traced prompt (``id="generation-N"``, N 1-based, in prompt order)
  with ``data-kept="true|false"`` and, when kept, ``data-query`` (0-based query row) and the
  same ``ol.topk[data-method=NAME]`` lists as its query; ``.prompt``, ``.answer`` and
  ``.verdict`` hold the prompt, the model's answer and the detector's verdict.
* Bench pages: ``table#results`` (results.csv) and one ``section.bench-run`` per task × loss mask;
  ids inside it are prefixed with ``<task>-<mask>-``.
* Analyze pages: ``pre.json[data-file=NAME]`` per JSON file.
* Images: ``figure.plot img`` with a ``data:image/png;base64,...`` source.
"""

from __future__ import annotations

import base64
import csv
import json
import math
import re
from collections.abc import Iterable
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import Any

from attriblm import __version__
from attriblm.errors import AttriblmError
from attriblm.io import write_text
from attriblm.pipeline.bench_layout import BenchDir
from attriblm.report.rundata import (
    Hit,
    RunData,
    check_k,
    is_run_dir,
    load_run,
    overlap_matrix,
    read_json_file,
    top_hits,
)

MAX_JSON_CHARS = 500_000
BENCH_MAX_QUERIES = 20

CSS = """
:root { --ok: #1a7f37; --bad: #b42318; --muted: #57606a; --line: #d0d7de; --bg2: #f6f8fa; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328;
  margin: 0 auto; max-width: 1200px; padding: 16px 24px 48px; }
h1 { font-size: 1.6em; margin: 0.2em 0; } h2 { font-size: 1.25em; margin-top: 1.6em;
  border-bottom: 1px solid var(--line); padding-bottom: 4px; } h3 { font-size: 1.05em; }
.meta, .note, caption { color: var(--muted); font-size: 0.9em; }
caption { caption-side: bottom; text-align: left; padding-top: 4px; }
table { border-collapse: collapse; margin: 8px 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid var(--line); padding: 3px 8px; text-align: right; vertical-align: top; }
th:first-child, td:first-child, td.text { text-align: left; }
th { background: var(--bg2); }
pre { background: var(--bg2); padding: 8px 10px; overflow: auto; max-height: 420px;
  border: 1px solid var(--line); border-radius: 4px; font-size: 12px; }
figure.plot { margin: 10px 0; } figure.plot img { max-width: 100%; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 0.85em; }
details { border: 1px solid var(--line); border-radius: 4px; margin: 6px 0; padding: 4px 10px; }
details > summary { cursor: pointer; padding: 2px 0; }
details[open] > summary { border-bottom: 1px solid var(--line); margin-bottom: 6px; }
.badge { display: inline-block; padding: 0 6px; border-radius: 10px; font-size: 0.8em;
  margin-left: 4px; border: 1px solid currentColor; }
.correct .mark, .badge.correct { color: var(--ok); }
.incorrect .mark, .badge.incorrect { color: var(--bad); }
.unknown .mark, .badge.unknown { color: var(--muted); }
.example { background: var(--bg2); padding: 6px 10px; border-radius: 4px; }
.example .field { white-space: pre-wrap; word-break: break-word; }
.methods { display: grid; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr)); gap: 10px; }
.method h4 { margin: 6px 0; }
ol.topk { padding-left: 0; list-style: none; margin: 0; }
li.hit { border-left: 4px solid var(--line); padding: 3px 8px; margin: 4px 0; }
li.hit.correct { border-left-color: var(--ok); } li.hit.incorrect { border-left-color: var(--bad); }
li.hit .head { font-size: 0.85em; color: var(--muted); }
li.hit .field { white-space: pre-wrap; word-break: break-word; font-size: 0.92em; }
.verdict.kept { color: var(--ok); } .verdict.dropped { color: var(--muted); }
details.generation.dropped > summary { color: var(--muted); }
.label { font-weight: 600; }
"""


# Small helpers --------------------------------------------------------------------------------
def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "x"


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, (int, float)):
        return f"{value:.{digits}f}"
    return _e(value)


def _image(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure class="plot" data-file="{_e(caption)}"><img alt="{_e(caption)}" '
        f'src="data:image/png;base64,{data}"><figcaption>{_e(caption)}</figcaption></figure>'
    )


def _images(paths: Iterable[Path], root: Path) -> str:
    parts = [_image(p, str(p.relative_to(root))) for p in paths]
    return "\n".join(parts)


def _mark(correct: bool | None) -> tuple[str, str]:
    if correct is None:
        return "unknown", "? no label"
    return ("correct", "✓ correct") if correct else ("incorrect", "✗ incorrect")


def _page(title: str, body: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f'<header><h1>{_e(title)}</h1><p class="meta">attriblm {_e(__version__)} · '
        f"generated {stamp} · self-contained (no network resources)</p></header>\n"
        f"{body}\n</body>\n</html>\n"
    )


# Metrics --------------------------------------------------------------------------------------
def _metric_cell(entry: dict[str, Any] | None, show_k: bool = False) -> str:
    if not isinstance(entry, dict):
        return "<td>–</td>"
    ci = entry.get("ci95") or [None, None]
    title = f"95% CI {_num(ci[0])} – {_num(ci[1])}" if ci and ci[0] is not None else ""
    k = f' <span class="note">(k={_e(entry.get("k"))})</span>' if show_k else ""
    return f'<td title="{_e(title)}">{_num(entry.get("value"))}{k}</td>'


def metrics_table(methods: dict[str, dict[str, Any]], table_id: str | None = None) -> str:
    """Method × Acc, Cover (k), AUPRC, AUROC, any ``cover@NAME``, scoring seconds."""
    extra = sorted({key for m in methods.values() for key in m if key.startswith("cover@")})
    ident = f' id="{_e(table_id)}"' if table_id else ""
    head = ["method", "Acc", "Cover", "AUPRC", "AUROC", *extra, "seconds"]
    rows = []
    for name, m in methods.items():
        cells = [
            f'<td class="method">{_e(name)}</td>',
            _metric_cell(m.get("acc")),
            _metric_cell(m.get("cover"), show_k=True),
            _metric_cell(m.get("auprc")),
            _metric_cell(m.get("auroc")),
            *(_metric_cell(m.get(key), show_k=True) for key in extra),
            f"<td>{_num(m.get('seconds'), 2)}</td>",
        ]
        rows.append(f'<tr data-method="{_e(name)}">' + "".join(cells) + "</tr>")
    return (
        f'<table class="metrics"{ident}><thead><tr>'
        + "".join(f"<th>{_e(h)}</th>" for h in head)
        + "</tr></thead><tbody>"
        + "".join(rows)
        + "</tbody><caption>Acc: top-1 has the query's label · Cover: share of the top-k with "
        "the query's label · hover a value for its 95% bootstrap interval · '–' = undefined"
        "</caption></table>"
    )


# A run ----------------------------------------------------------------------------------------
def _summary_table(run: RunData) -> str:
    info = run.info
    model = info.get("model") or {}
    total = (info.get("timings_seconds") or {}).get("total")
    rows = [
        ("run directory", str(run.path)),
        ("model", model.get("spec") or run.config.get("model")),
        ("adapter", model.get("adapter") or run.config.get("adapter")),
        ("train", f"{run.config.get('train', '')} ({run.n_train} rows)"),
        ("queries", f"{run.config.get('queries', '')} ({run.n_query} rows)"),
        ("loss mask · template", f"{info.get('loss_mask')} · {info.get('template')}"),
        ("methods", ", ".join(run.methods)),
        ("total time (s)", _num(total, 1)),
    ]
    if run.generations is not None:
        trace = run.trace
        kept = sum(bool(r.get("kept")) for r in run.generations)
        rows.insert(5, ("traced prompts", f"{len(run.generations)} ({kept} kept)"))
        rows.insert(6, ("detector", f"--detect {trace.get('detect', '?')}"))
    body = "".join(f'<tr><th>{_e(k)}</th><td class="text">{_e(v)}</td></tr>' for k, v in rows)
    return f'<table class="summary">{body}</table>'


def _agreement_table(matrix: dict[str, dict[str, float]], ident: str, cls: str) -> str:
    methods = list(matrix)
    head = "<tr><th>top-k overlap</th>" + "".join(f"<th>{_e(m)}</th>" for m in methods) + "</tr>"
    body = "".join(
        f'<tr data-method="{_e(a)}"><td class="method">{_e(a)}</td>'
        + "".join(f"<td>{_num(matrix[a][b], 2)}</td>" for b in methods)
        + "</tr>"
        for a in methods
    )
    id_attr = f' id="{_e(ident)}"' if ident else ""
    return f'<table class="{cls}"{id_attr}><thead>{head}</thead><tbody>{body}</tbody></table>'


def _example_block(prompt: Any, response: Any, label: Any) -> str:
    return (
        '<div class="example">'
        f'<div><b>prompt</b> <span class="field prompt">{_e(prompt)}</span></div>'
        f'<div><b>response</b> <span class="field response">{_e(response)}</span></div>'
        f'<div><b>label</b> <span class="label">{_e(label if label is not None else "–")}'
        "</span></div></div>"
    )


def _hit_item(hit: Hit) -> str:
    cls, mark = _mark(hit.correct)
    return (
        f'<li class="hit {cls}" data-rank="{hit.rank}" data-index="{hit.index}" '
        f'data-label="{_e(hit.label)}" data-correct="{_e(cls)}">'
        f'<div class="head">#{hit.rank} · train row {hit.index + 1} · score '
        f'<span class="score">{hit.score:.6g}</span> · <span class="label">{_e(hit.label)}</span>'
        f' <span class="mark">{mark}</span></div>'
        f'<div class="field prompt">{_e(hit.prompt)}</div>'
        f'<div class="field response">→ {_e(hit.response)}</div></li>'
    )


def _snippet(text: str, width: int = 90) -> str:
    return text if len(text) <= width else text[: width - 3] + "…"


def _method_lists(top: dict[str, list[Hit]]) -> list[str]:
    """One ``div.method`` with its ``ol.topk`` per method."""
    lists = []
    for method, hits in top.items():
        items = "".join(_hit_item(h) for h in hits)
        n_ok = sum(h.correct is True for h in hits)
        lists.append(
            f'<div class="method" data-method="{_e(method)}"><h4>{_e(method)} '
            f'<span class="note">{n_ok}/{len(hits)} with the query\'s label</span></h4>'
            f'<ol class="topk" data-method="{_e(method)}">{items}</ol></div>'
        )
    return lists


def _query_section(run: RunData, q: int, k: int, prefix: str, open_: bool) -> tuple[str, dict]:
    query = run.queries[q]
    top = {m: top_hits(run, m, q, k) for m in run.methods}
    badges = []
    for method, hits in top.items():
        cls, _ = _mark(hits[0].correct if hits else None)
        symbol = {"correct": "✓", "incorrect": "✗"}.get(cls, "?")
        badges.append(
            f'<span class="badge {cls}" data-method="{_e(method)}">{_e(method)} {symbol}</span>'
        )
    prompt = str(query.get("prompt", ""))
    snippet = _snippet(prompt)
    lists = _method_lists(top)
    overlap = overlap_matrix(top, k)
    html = (
        f'<details class="query" id="{_e(prefix)}query-{q + 1}" data-query="{q}" '
        f'data-label="{_e(query.get("label"))}"{" open" if open_ else ""}>'
        f'<summary><b>query row {q + 1}</b> · <span class="label">{_e(query.get("label"))}</span>'
        f' · {_e(snippet)} <span class="note">top-1:</span>{"".join(badges)}</summary>'
        + _example_block(query.get("prompt"), query.get("response"), query.get("label"))
        + f'<div class="methods">{"".join(lists)}</div>'
        + (
            f"<h4>Agreement (|A ∩ B| / {k} of the top-{k})</h4>"
            + _agreement_table(overlap, "", "query-agreement")
            if len(top) > 1
            else ""
        )
        + "</details>"
    )
    return html, overlap


def _verdict(kept: bool, detect: Any) -> str:
    spec = f" --detect {detect}" if detect else ""
    if kept:
        return f'<span class="verdict kept">✓ kept by the detector{_e(spec)}</span>'
    return f'<span class="verdict dropped">– not kept by the detector{_e(spec)}</span>'


def _generation_item(
    run: RunData, row: dict[str, Any], number: int, k: int, prefix: str, open_: bool
) -> str:
    kept = bool(row.get("kept"))
    query = row.get("query") if kept else None
    prompt, generation = str(row.get("prompt", "")), str(row.get("generation", ""))
    attrs = f' data-query="{query}"' if query is not None else ""
    body = (
        '<div class="example">'
        f'<div><b>prompt</b> <span class="field prompt">{_e(prompt)}</span></div>'
        f'<div><b>generation</b> <span class="field answer">{_e(generation)}</span></div>'
        f"<div><b>detector</b> {_verdict(kept, run.trace.get('detect'))}</div></div>"
    )
    if query is not None:
        top = {m: top_hits(run, m, query, k) for m in run.methods}
        body += (
            f'<p class="note">attributed as query row {query + 1} '
            f'(<a href="#{_e(prefix)}query-{query + 1}">its query section</a>)</p>'
            f'<div class="methods">{"".join(_method_lists(top))}</div>'
        )
    cls = "kept" if kept else "dropped"
    return (
        f'<details class="generation {cls}" id="{_e(prefix)}generation-{number}" '
        f'data-index="{_e(row.get("index", number - 1))}" data-kept="{str(kept).lower()}"{attrs}'
        f"{' open' if open_ else ''}>"
        f"<summary><b>prompt {number}</b> · {_verdict(kept, None)} · {_e(_snippet(prompt, 60))}"
        f" → {_e(_snippet(generation, 60))}</summary>{body}</details>"
    )


def generations_section(
    run: RunData, *, k: int, prefix: str = "", max_prompts: int | None = None
) -> str:
    """A ``trace`` run's prompts: the generation, the detector's verdict and, when kept, the
    top-``k`` training rows per method (``""`` for a run without ``generations.jsonl``)."""
    if run.generations is None:
        return ""
    rows = run.generations
    n_show = len(rows) if max_prompts is None else min(len(rows), max_prompts)
    trace = run.trace
    n_kept = sum(bool(r.get("kept")) for r in rows)
    rule = f" ({trace['detector_rule']})" if trace.get("detector_rule") else ""
    decoding = f"; decoding: {trace['decoding']}" if trace.get("decoding") else ""
    note = (
        f"attriblm trace generated an answer to each of {len(rows)} prompts; the detector "
        f"--detect {trace.get('detect', '?')}{rule} kept {n_kept}, and each kept (prompt, "
        f"generation) pair was attributed as a query{decoding}. Showing "
        + (f"all {len(rows)} prompts" if n_show == len(rows) else f"the first {n_show}")
        + f"; top-{k} training rows per method, ranked as in the queries below."
    )
    first_kept = next((i for i, r in enumerate(rows) if r.get("kept")), None)
    items = "".join(
        _generation_item(run, rows[i], i + 1, k, prefix, open_=i == first_kept)
        for i in range(n_show)
    )
    return (
        f'<section id="{prefix}generations" class="generations"><h2>Generations</h2>'
        f'<p class="note">{_e(note)}</p>{items}</section>'
    )


def _mean_overlap(per_query: list[dict], methods: list[str]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for a in methods:
        out[a] = {}
        for b in methods:
            values = [m[a][b] for m in per_query if a in m and b in m[a]]
            out[a][b] = sum(values) / len(values) if values else float("nan")
    return out


def run_sections(run: RunData, *, k: int, prefix: str = "", max_queries: int | None = None) -> str:
    """The body of a run's report; ``prefix`` keeps element ids unique on a bench page."""
    check_k(k)
    k_eff = min(k, run.n_train) if run.n_train else k
    parts = [f'<section id="{prefix}summary"><h2>Run</h2>{_summary_table(run)}</section>']
    config = run.config_text or "(no config.yaml)"
    parts.append(
        f'<section id="{prefix}configuration"><h2>Configuration</h2>'
        f'<p class="note">config.yaml — the resolved settings</p>'
        f'<pre id="{prefix}config" class="config">{_e(config)}</pre>'
        f"<details><summary>run.json</summary><pre>"
        f"{_e(json.dumps(run.info, indent=2))}</pre></details></section>"
    )
    metrics_html = (
        metrics_table(run.metrics.get("methods", {}), f"{prefix}metrics")
        if run.metrics
        else f'<p class="note" id="{prefix}metrics-missing">no metrics</p>'
    )
    note = f'<p class="note metrics-note">{_e(run.metrics_note)}</p>' if run.metrics_note else ""
    parts.append(f'<section id="{prefix}metrics-section"><h2>Metrics</h2>{metrics_html}{note}')
    parts.append("</section>")
    if run.images:
        parts.append(
            f'<section id="{prefix}plots"><h2>Plots</h2>{_images(run.images, run.path)}</section>'
        )
    if run.generations is not None:
        parts.append(generations_section(run, k=k_eff, prefix=prefix, max_prompts=max_queries))
    n_show = run.n_query if max_queries is None else min(run.n_query, max_queries)
    queries, overlaps = [], []
    for q in range(n_show):
        html, overlap = _query_section(run, q, k_eff, prefix, open_=q == 0)
        queries.append(html)
        overlaps.append(overlap)
    if len(run.methods) > 1 and overlaps:
        mean = _mean_overlap(overlaps, run.methods)
        parts.append(
            f'<section id="{prefix}agreement-section"><h2>Agreement between methods</h2>'
            f'<p class="note">Mean over {n_show} queries of |A ∩ B| / {k_eff}: the share of '
            f"one method's top-{k_eff} training rows that the other also ranks in its top-"
            f"{k_eff}.</p>"
            + _agreement_table(mean, f"{prefix}agreement", "agreement")
            + "</section>"
        )
    shown = (
        f"all {run.n_query} queries"
        if n_show == run.n_query
        else f"the first {n_show} of {run.n_query} queries (`attriblm report {run.path}` shows all)"
    )
    parts.append(
        f'<section id="{prefix}queries" class="queries"><h2>Queries</h2>'
        f'<p class="note">{_e(shown)}; top-{k_eff} training rows per method, ranked by score '
        "(larger = more supportive; equal scores in the run's seeded random tie order, as in "
        "the metrics). ✓: same label as the query; ✗: a different label. "
        "Rows are 1-based.</p>" + "".join(queries) + "</section>"
    )
    return "\n".join(parts)


# A bench directory ----------------------------------------------------------------------------
def is_bench_dir(path: Path) -> bool:
    """True when ``path`` holds ``bench``'s combined results."""
    return BenchDir(path).results_csv.is_file()


def _csv_cell(value: str) -> str:
    try:
        number = float(value)
    except ValueError:
        return f'<td class="text">{_e(value)}</td>'
    return f"<td>{number:.3f}</td>" if "." in value else f"<td>{_e(value)}</td>"


def _csv_table(path: Path, table_id: str) -> str:
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return f'<p class="note">{_e(path.name)} is empty</p>'
    fields = list(rows[0])
    head = "".join(f"<th>{_e(f)}</th>" for f in fields)
    body = []
    for row in rows:
        cells = [_csv_cell(row.get(f) or "") for f in fields]
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<table id="{_e(table_id)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def bench_sections(path: Path, *, k: int, max_queries: int | None = BENCH_MAX_QUERIES) -> str:
    """Results table and plot, then per task × loss mask its metrics and its run."""
    bench = BenchDir(path)
    parts = [
        '<section id="results-section"><h2>Results</h2>'
        '<p class="note">results.csv (one row per task × loss mask × method)</p>'
        + _csv_table(bench.results_csv, "results")
    ]
    if bench.results_md.is_file():
        parts.append(
            "<details><summary>results.md</summary><pre>"
            f"{_e(bench.results_md.read_text(encoding='utf-8'))}</pre></details>"
        )
    parts.append("</section>")
    top_images = sorted(path.glob("*.png"))
    if top_images:
        parts.append(f'<section id="plots"><h2>Plots</h2>{_images(top_images, path)}</section>')
    for metrics_file in bench.metrics_files():
        report = read_json_file(metrics_file)
        task = str(report.get("task", metrics_file.parent.parent.name))
        mask = str(report.get("loss_mask", metrics_file.parent.name))
        prefix = f"{_slug(task)}-{_slug(mask)}-"
        found = bench.find_run(report.get("run"))
        run_dir = None if found is None else found.path
        if run_dir is None:
            inner = [
                metrics_table(report.get("methods", {}), f"{prefix}metrics"),
                f'<p class="note">run directory {_e(report.get("run"))} not found; '
                "its queries are not shown</p>",
            ]
        else:
            run = load_run(run_dir, compute_metrics=False)
            run.metrics, run.metrics_note = report, f"from {metrics_file.relative_to(path)}"
            inner = [
                f'<p class="note">run directory: <code>{_e(run_dir)}</code></p>',
                run_sections(run, k=k, prefix=prefix, max_queries=max_queries),
            ]
        parts.append(
            f'<section class="bench-run" id="{prefix}bench" data-task="{_e(task)}" '
            f'data-loss-mask="{_e(mask)}"><h2>{_e(task)} · loss mask {_e(mask)}</h2>'
            f"<details><summary>metrics, configuration and queries</summary>{''.join(inner)}"
            "</details></section>"
        )
    return "\n".join(parts)


# An analyze directory -------------------------------------------------------------------------
def is_analyze_dir(path: Path) -> bool:
    """True when ``path`` holds JSON summaries or PNG plots (what ``analyze`` writes)."""
    return any(path.glob("*.json")) or any(path.glob("*.png"))


def analyze_sections(path: Path) -> str:
    """Every JSON summary pretty-printed, then every PNG (top level and one folder down)."""
    parts = ['<section id="summaries"><h2>Summaries</h2>']
    for file in sorted(path.glob("*.json")) + sorted(path.glob("*/*.json")):
        text = json.dumps(read_json_file(file), indent=2, ensure_ascii=False)
        if len(text) > MAX_JSON_CHARS:
            text = text[:MAX_JSON_CHARS] + f"\n… (truncated; see {file})"
        name = str(file.relative_to(path))
        parts.append(
            f'<h3>{_e(name)}</h3><pre class="json" data-file="{_e(name)}">{_e(text)}</pre>'
        )
    parts.append("</section>")
    images = sorted(path.glob("*.png")) + sorted(path.glob("*/*.png"))
    if images:
        parts.append(f'<section id="plots"><h2>Plots</h2>{_images(images, path)}</section>')
    return "\n".join(parts)


# Entry point ----------------------------------------------------------------------------------
def detect_kind(path: Path | str) -> str:
    """``"run"``, ``"bench"`` or ``"analyze"``; a one-line :class:`AttriblmError` otherwise."""
    path = Path(path)
    if not path.is_dir():
        raise AttriblmError(f"{path}: no such directory (expected a run, bench or analyze dir)")
    if is_run_dir(path):
        return "run"
    if is_bench_dir(path):
        return "bench"
    if is_analyze_dir(path):
        return "analyze"
    raise AttriblmError(
        f"{path}: not an attriblm run, bench or analyze directory "
        "(expected run.json + scores/, results.csv, or *.json / *.png files)"
    )


def build_report(path: Path | str, *, k: int = 5, max_queries: int | None = None) -> str:
    """The report's HTML text for ``path`` (see :func:`render_report`)."""
    path = Path(path)
    check_k(k)
    kind = detect_kind(path)
    name = path.resolve().name
    if kind == "run":
        body = run_sections(load_run(path), k=k, max_queries=max_queries)
        return _page(f"attriblm run · {name}", body)
    if kind == "bench":
        limit = BENCH_MAX_QUERIES if max_queries is None else max_queries
        return _page(f"attriblm bench · {name}", bench_sections(path, k=k, max_queries=limit))
    return _page(f"attriblm analysis · {name}", analyze_sections(path))


def render_report(
    path: Path | str, out_html: Path | str, *, k: int = 5, max_queries: int | None = None
) -> Path:
    """Write one self-contained HTML report for a run, bench or analyze directory.

    Args:
        path: an ``attribute`` run directory, a ``bench`` output directory or an ``analyze``
            output directory (detected from its files).
        out_html: the HTML file to write (atomically).
        k: training rows shown per query and method (and the k of the agreement tables).
        max_queries: show only the first N queries of each run (default: all for a run,
            20 per task × loss mask on a bench page).

    Returns:
        ``out_html`` as a :class:`~pathlib.Path`.
    """
    out_html = Path(out_html)
    if out_html.is_dir():
        raise AttriblmError(f"{out_html}: is a directory; --out must name an .html file")
    text = build_report(path, k=k, max_queries=max_queries)
    return write_text(out_html, text)
