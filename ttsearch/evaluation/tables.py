"""Presenting accuracy@k results: a text table, a rich table, a plot and a JSON-ready dict.

Rows are methods, columns are budgets N = 1, 2, 4, ...; cells show the mean accuracy over
seeds (in percent) and, with several seeds, its standard deviation. Plots use
matplotlib's object API on an Agg canvas, so they never touch pyplot's global state or
need a display.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from ttsearch.evaluation.metrics import AccuracyReport, AccuracyTable, MethodCurve

# Display names of the methods (the blog's terms).
METHOD_LABELS: dict[str, str] = {
    "majority": "Majority vote",
    "naive": "Best-of-N (vanilla)",
    "weighted": "Best-of-N (weighted)",
    "pass": "pass@k (oracle)",
}

SCHEMA_VERSION = 1  # bump when the dict layout of `report_to_dict` changes


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def _cell(curve: MethodCurve, i: int, seeds: int, digits: int) -> str:
    if math.isnan(curve.mean[i]):
        return "-"  # no run has this budget (a stepwise run at another N)
    cell = f"{100 * curve.mean[i]:.{digits}f}"
    if seeds > 1:
        cell += f" ± {100 * curve.std[i]:.{digits}f}"
    return cell


def text_grid(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Aligned plain-text columns: the first left-aligned, the rest right-aligned (numbers)."""
    widths = [max(len(r[j]) for r in [header, *rows]) for j in range(len(header))]

    def line(r: Sequence[str]) -> str:
        return "  ".join(r[j].ljust(widths[j]) if j == 0 else r[j].rjust(widths[j]) for j in range(len(r))).rstrip()

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def format_table(table: AccuracyTable, *, title: str | None = None, digits: int = 1) -> str:
    """Plain aligned text: one row per method, one column per N, accuracy in percent."""
    header = ["method"] + [f"N={k}" for k in table.ks]
    rows = [
        [method_label(c.method)] + [_cell(c, i, table.num_seeds, digits) for i in range(len(table.ks))]
        for c in table.curves
    ]
    lines = []
    if title:
        lines.append(title)
    lines.append(
        f"accuracy (%) over {table.num_problems} problems, {table.num_seeds} seed(s)"
        + (", mean ± std" if table.num_seeds > 1 else "")
    )
    lines.append(text_grid(header, rows))
    return "\n".join(lines)


def rich_table(table: AccuracyTable, *, title: str | None = None, digits: int = 1) -> Table:
    """The same table as a `rich.table.Table`, for console output."""
    t = Table(title=title, caption=f"{table.num_problems} problems, {table.num_seeds} seed(s)")
    t.add_column("method")
    for k in table.ks:
        t.add_column(f"N={k}", justify="right")
    for c in table.curves:
        t.add_row(method_label(c.method), *(_cell(c, i, table.num_seeds, digits) for i in range(len(table.ks))))
    return t


def plot_accuracy(table: AccuracyTable, path: str | Path, *, title: str | None = None, dpi: int = 150) -> Path:
    """Accuracy vs N (log2 x-axis), one line per method with a ±1 std band; saved to `path`.

    The file format follows the suffix (png, pdf, svg, ...). Returns the path written.
    """
    # Imported here so that importing ttsearch.evaluation stays cheap.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(6.4, 4.4))
    FigureCanvasAgg(fig)  # attaches itself to fig; no pyplot, no global backend switch
    ax = fig.add_subplot()
    for c in table.curves:
        mean = [100 * m for m in c.mean]
        (line,) = ax.plot(table.ks, mean, marker="o", label=method_label(c.method))
        if table.num_seeds > 1:
            lo = [100 * (m - s) for m, s in zip(c.mean, c.std)]
            hi = [100 * (m + s) for m, s in zip(c.mean, c.std)]
            ax.fill_between(table.ks, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(table.ks), [str(k) for k in table.ks])
    ax.minorticks_off()
    ax.set_xlabel("Number of generations per problem (N)")
    ax.set_ylabel("Accuracy (%)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return path


def table_to_dict(table: AccuracyTable) -> dict[str, Any]:
    """Plain dict (JSON-serialisable) of one table."""
    return {
        "ks": list(table.ks),
        "num_problems": table.num_problems,
        "num_seeds": table.num_seeds,
        "methods": {
            c.method: {
                "mean": _json_floats(c.mean),
                "std": _json_floats(c.std),
                "per_seed": [_json_floats(s) for s in c.per_seed],
            }
            for c in table.curves
        },
    }


def _json_floats(values: Sequence[float]) -> list[float | None]:
    # NaN (a budget a seed does not have) is not JSON: write null.
    return [None if math.isnan(v) else v for v in values]


def _floats(values: Sequence[float | None]) -> tuple[float, ...]:
    return tuple(math.nan if v is None else v for v in values)


def report_to_dict(report: AccuracyReport) -> dict[str, Any]:
    """Plain dict (JSON-serialisable) of a whole report; levels become string keys."""
    return {
        "schema_version": SCHEMA_VERSION,
        "overall": table_to_dict(report.overall),
        "by_level": {str(lv): table_to_dict(t) for lv, t in report.by_level.items()},
        "by_subject": {s: table_to_dict(t) for s, t in report.by_subject.items()},
    }


def table_from_dict(d: dict[str, Any]) -> AccuracyTable:
    """Inverse of `table_to_dict`."""
    curves = tuple(
        MethodCurve(
            method=m,
            mean=_floats(v["mean"]),
            std=_floats(v["std"]),
            per_seed=tuple(_floats(s) for s in v["per_seed"]),
        )
        for m, v in d["methods"].items()
    )
    return AccuracyTable(ks=tuple(d["ks"]), curves=curves, num_problems=d["num_problems"], num_seeds=d["num_seeds"])


def report_from_dict(d: dict[str, Any]) -> AccuracyReport:
    """Inverse of `report_to_dict` (e.g. to re-plot saved results)."""
    if d.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"unsupported results schema_version {d.get('schema_version')!r}")
    return AccuracyReport(
        overall=table_from_dict(d["overall"]),
        by_level={int(lv): table_from_dict(t) for lv, t in d["by_level"].items()},
        by_subject={s: table_from_dict(t) for s, t in d["by_subject"].items()},
    )


def save_report_json(report: AccuracyReport, path: str | Path) -> Path:
    """Write `report_to_dict(report)` as indented JSON; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report_to_dict(report), indent=2) + "\n", encoding="utf-8")
    return path
