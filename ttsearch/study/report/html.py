"""One self-contained HTML page (figures embedded as base64 PNG) showing the whole report."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from ttsearch.evaluation.metrics import AccuracyTable
from ttsearch.evaluation.tables import method_label
from ttsearch.study.report.numbers import Report
from ttsearch.study.report.render import amount, bin_rows, usage_fields
from ttsearch.study.report.trees import TreeLink

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f3f3f3; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.meta td { border: none; padding: 0.1em 0.8em 0.1em 0; }
"""


def _esc(x: object) -> str:
    return html.escape(str(x))


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], *, numeric_from: int = 1) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{_esc(c)}</td>' if j >= numeric_from else f"<td>{_esc(c)}</td>" for j, c in enumerate(r)
        )
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(mean: float, std: float, seeds: int) -> str:
    if math.isnan(mean):
        return "-"
    return f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if seeds > 1 else "")


def _accuracy_table(t: AccuracyTable) -> str:
    rows = [[method_label(c.method), *(_cell(m, s, t.num_seeds) for m, s in zip(c.mean, c.std))] for c in t.curves]
    return _table(["selection", *(f"N={k}" for k in t.ks)], rows)


def render_html(
    report: Report, images: Mapping[str, Path], trees: Mapping[str, Sequence[TreeLink]] | None = None
) -> str:
    """The page; `images` maps a caption to a PNG file, embedded in that order; `trees`:
    the recorded search trees' pages by run, linked from the page's last section."""
    exp = report.experiment
    m = exp.manifest
    meta = [
        ("directories", ", ".join(str(d) for d in exp.dirs)),
        ("recipe hash", m.get("recipe_hash", "?")),
        ("problems", report.problems),
        ("runs", len(exp.runs)),
        ("ttsearch / vLLM", f"{m.get('ttsearch_version', '?')} / {m.get('vllm_version', '?')}"),
        ("machine", _machine(m.get("machine"))),
        (
            "started / finished",
            f"{m.get('started_at', '?')} / {m.get('finished_at') or 'not finished (partial results)'}",
        ),
    ]
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>ttsearch report</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>ttsearch experiment report</h1>",
        '<table class="meta">'
        + "".join(f"<tr><td><b>{_esc(k)}</b></td><td>{_esc(v)}</td></tr>" for k, v in meta)
        + "</table>",
        "<ul>" + "".join(f"<li>{_esc(n)}</li>" for n in report.notes) + "</ul>",
    ]
    for caption, path in images.items():
        if caption.startswith("accuracy vs N"):
            parts.append(_img(caption, path))
    parts.append("<h2>Accuracy (%) by strategy, budget N and selection</h2>")
    for s in report.strategies:
        failed = sum(r.failed for r in s.runs)
        parts.append(
            f"<h3>{_esc(s.label)}</h3><p>{_esc(s.strategy)}, {_esc(s.kind)}; seeds {_esc(', '.join(map(str, s.seeds)))}; "
            f"own selection: {_esc(s.selection)}{f'; {failed} failed problem(s) left out' if failed else ''}</p>"
        )
        parts.append(_accuracy_table(s.overall))
    fields = usage_fields(report.strategies)
    parts.append("<h2>Compute per problem</h2>")
    rows = [
        [s.label, str(c.k), _cell(s.accuracy(c.k), 0.0, 1), *(amount(c.usage.get(f)) for f in fields)]
        for s in report.strategies
        for c in s.compute
    ]
    parts.append(_table(["strategy", "N", "accuracy % (own selection)", *fields], rows))
    for caption, path in images.items():
        if caption.startswith("accuracy vs compute"):
            parts.append(_img(caption, path))
    parts.append("<h2>Accuracy (%) by difficulty</h2>")
    for kind, title in (
        ("oracle", "oracle bins (pass@1 quintiles)"),
        ("predicted", "predicted bins (mean PRM score quintiles)"),
        ("level", "MATH levels"),
    ):
        if kind != "level" and kind not in report.bins:
            continue
        levels, brows = bin_rows(report.strategies, kind)
        if not levels:
            continue
        note = f" from {report.bins[kind].samples} samples: {report.bins[kind].source}" if kind in report.bins else ""
        parts.append(
            f"<h3>{_esc(title)}</h3><p>each strategy at its largest N, own selection; 1 = easiest{_esc(note)}</p>"
        )
        parts.append(
            _table(
                ["strategy", "N", *map(str, levels)],
                [[lb, str(k), *(_cell(a, 0.0, 1) for a in accs)] for lb, k, accs in brows],
            )
        )
        for caption, path in images.items():
            if caption == f"bins {kind}":
                parts.append(_img(caption, path))
    for caption, path in images.items():
        if caption.startswith("compute-optimal"):  # issue #10: the table next to its plot
            parts.append("<h2>Compute-optimal scaling</h2>")
            parts.append(_img(caption, path))
            table = Path(path).with_suffix(".txt")
            if table.exists():
                parts.append(f"<pre>{_esc(table.read_text(encoding='utf-8'))}</pre>")
    if trees:
        parts.append(_trees_section(trees))
    parts.append("</body></html>")
    return "\n".join(parts)


def _trees_section(trees: Mapping[str, Sequence[TreeLink]]) -> str:
    """Every recorded tree, run by run: why each search chose its answer."""
    parts = ["<h2>Search trees</h2><p>each problem's tree as searched (execution.keep_trees)</p>"]
    verdict = {True: "right", False: "wrong", None: "ungraded"}
    for run_id, links in trees.items():
        items = "".join(
            f'<li><a href="{html.escape(link.href)}">{_esc(link.unique_id)}</a>: '
            f"{_esc(link.answer)} ({verdict[link.correct]})</li>"
            for link in links
        )
        parts.append(f"<details><summary>{_esc(run_id)} ({len(links)} trees)</summary><ul>{items}</ul></details>")
    return "\n".join(parts)


def _machine(machine: object) -> str:
    if isinstance(machine, dict):
        return ", ".join(f"{k}: {v}" for k, v in machine.items())
    return str(machine if machine is not None else "?")


def _img(caption: str, path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<figure><img alt="{_esc(caption)}" src="data:image/png;base64,{data}"><figcaption>{_esc(caption)}</figcaption></figure>'
