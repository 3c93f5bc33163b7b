"""The report's figures (PNG), like the blog's: accuracy vs N per strategy on a log2 axis,
accuracy vs compute, and accuracy per difficulty bin as grouped bars.

matplotlib's object API on an Agg canvas: no pyplot global state, no display needed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ttsearch.evaluation.tables import method_label
from ttsearch.study.report.numbers import SELECTIONS, Report
from ttsearch.study.report.render import bin_rows

if TYPE_CHECKING:
    from matplotlib.figure import Figure

BIN_TITLES = {
    "oracle": "Accuracy by oracle difficulty (pass@1 quintile)",
    "predicted": "Accuracy by predicted difficulty (mean PRM score quintile)",
    "level": "Accuracy by MATH level",
}


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)  # attaches itself to fig
    return fig


def _save(fig: Figure, path: Path, dpi: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return path


def plot_accuracy_vs_n(report: Report, path: str | Path, *, dpi: int = 120) -> Path:
    """One panel per selection; one line per strategy (mean, +-1 std band over seeds)."""
    fig = _figure(5.0 * len(SELECTIONS), 4.2)
    all_ks = sorted({k for s in report.strategies for k in s.ks})
    for i, selection in enumerate(SELECTIONS):
        ax = fig.add_subplot(1, len(SELECTIONS), i + 1)
        for si, s in enumerate(report.strategies):
            if selection not in s.overall.methods:
                continue
            curve = s.overall.curve(selection)
            pts = [(k, m, sd) for k, m, sd in zip(s.ks, curve.mean, curve.std) if not math.isnan(m)]
            ks = [p[0] for p in pts]
            # One colour per strategy across every panel and figure.
            (line,) = ax.plot(ks, [100 * p[1] for p in pts], marker="o", label=s.label, color=f"C{si}")
            if len(s.seeds) > 1:
                ax.fill_between(
                    ks,
                    [100 * (m - sd) for _, m, sd in pts],
                    [100 * (m + sd) for _, m, sd in pts],
                    color=line.get_color(),
                    alpha=0.2,
                    linewidth=0,
                )
        ax.set_xscale("log", base=2)
        ax.set_xticks(all_ks, [str(k) for k in all_ks])
        ax.minorticks_off()
        ax.set_xlabel("Number of generations per problem (N)")
        ax.set_ylabel("Accuracy (%)")
        ax.set_title(method_label(selection))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    return _save(fig, Path(path), dpi)


TOTAL = "total"  # the compute axis of equal compute: generated + PRM-computed tokens


def plot_accuracy_vs_compute(
    report: Report,
    path: str | Path,
    *,
    fields: tuple[str, ...] = ("generated_tokens", "verifier_computed_tokens"),
    dpi: int = 120,
) -> Path:
    """Accuracy vs mean compute per problem, log x-axis: one panel per usage field that any
    strategy spent (generated tokens, PRM tokens the PRM computed: cached ones cost nothing
    and are not on the axis), and, where the PRM computed any, one for their sum (equal
    compute across methods that split it differently). A solid line is the strategy's own
    selection; a strategy whose own selection is not the weighted vote also gets a dashed
    line for it, so methods are compared with one selection too."""
    shown = [f for f in fields if any(c.usage.get(f, 0) > 0 for s in report.strategies for c in s.compute)]
    shown = shown or list(fields[:1])
    if len(shown) > 1:
        shown.append(TOTAL)
    fig = _figure(6.0 * len(shown), 4.8)
    for i, field in enumerate(shown):
        ax = fig.add_subplot(1, len(shown), i + 1)
        for si, s in enumerate(report.strategies):
            cost = {c.k: _cost(c.usage, field, fields) for c in s.compute}
            selections = [s.selection]
            if s.selection != "weighted" and "weighted" in s.overall.methods:
                selections.append("weighted")
            for selection in selections:
                pts = [(cost[c.k], 100 * s.accuracy(c.k, selection), c.k) for c in s.compute if cost[c.k] > 0]
                pts = [p for p in pts if not math.isnan(p[1])]
                if not pts:
                    continue
                own = selection == s.selection
                ax.plot(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    marker="o" if own else ".",
                    linestyle="-" if own else "--",
                    label=f"{s.label} ({selection})",
                    color=f"C{si}",
                )
                if own:
                    for x, y, k in pts:
                        ax.annotate(f"N={k}", (x, y), textcoords="offset points", xytext=(3, 3), fontsize="x-small")
        ax.set_xscale("log")
        ax.set_ylabel("Accuracy (%)")
        if field == TOTAL:
            ax.set_xlabel("generated + PRM computed tokens per problem")
            ax.set_title("Accuracy vs total compute")
        else:
            ax.set_xlabel(f"{field.replace('_', ' ')} per problem")
            ax.set_title(f"Accuracy vs {'PRM' if field.startswith('verifier') else 'policy'} compute")
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="x-small")
    return _save(fig, Path(path), dpi)


def _cost(usage: Mapping[str, float], field: str, fields: tuple[str, ...]) -> float:
    if field == TOTAL:
        return sum(usage.get(f, 0.0) for f in fields)
    return usage.get(field, 0.0)


def plot_bins(report: Report, kind: str, path: str | Path, *, dpi: int = 120) -> Path:
    """Grouped bars: per bin, one bar per strategy at its largest N with its own selection."""
    levels, rows = bin_rows(report.strategies, kind)
    fig = _figure(max(6.4, 1.2 * len(levels) + 2), 4.4)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(rows))
    for i, (label, k, accs) in enumerate(rows):
        xs = [j + (i - (len(rows) - 1) / 2) * width for j in range(len(levels))]
        ax.bar(
            xs, [0.0 if math.isnan(a) else 100 * a for a in accs], width=width, label=f"{label} (N={k})", color=f"C{i}"
        )
    ax.set_xticks(range(len(levels)), [str(lv) for lv in levels])
    ax.set_xlabel("MATH level" if kind == "level" else "difficulty bin (1 = easiest)")
    ax.set_ylabel("Accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(BIN_TITLES.get(kind, kind))
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, Path(path), dpi)
