"""Writing a report to a directory: summary.json, per_problem.jsonl, report.txt, PNGs, report.html."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ttsearch.study.optimal.report_section import write_compute_optimal
from ttsearch.study.report.html import render_html
from ttsearch.study.report.numbers import Report
from ttsearch.study.report.plots import plot_accuracy_vs_compute, plot_accuracy_vs_n, plot_bins
from ttsearch.study.report.render import format_table, report_to_dict
from ttsearch.study.report.trees import write_tree_pages


@dataclass(frozen=True, slots=True)
class ReportFiles:
    summary: Path  # summary.json: every number
    per_problem: Path  # per_problem.jsonl: accuracy per (run, problem, budget, method)
    text: Path  # report.txt: format_table(report)
    html: Path  # report.html: self-contained page
    figures: tuple[Path, ...]  # PNGs


def write_report(report: Report, out_dir: str | Path) -> ReportFiles:
    """Write every output of the report under `out_dir` (created if needed); returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = _write_text(out / "summary.json", json.dumps(report_to_dict(report), indent=2, allow_nan=False) + "\n")
    per_problem = _write_text(
        out / "per_problem.jsonl",
        "".join(json.dumps(row, allow_nan=False) + "\n" for s in report.strategies for row in s.problem_scores()),
    )
    text = _write_text(out / "report.txt", format_table(report) + "\n")
    images: dict[str, Path] = {
        "accuracy vs N": plot_accuracy_vs_n(report, out / "accuracy_vs_n.png"),
        "accuracy vs compute (policy tokens and PRM tokens computed, per problem)": plot_accuracy_vs_compute(
            report, out / "accuracy_vs_compute.png"
        ),
    }
    for kind in report.bins:
        images[f"bins {kind}"] = plot_bins(report, kind, out / f"bins_{kind}.png")
    if any(s.by_level for s in report.strategies):
        images["bins level"] = plot_bins(report, "level", out / "bins_level.png")

    _, optimal_plot = write_compute_optimal(report.experiment, out)  # compute_optimal.txt, and the plot
    if optimal_plot is not None:
        images["compute-optimal vs fixed strategies (cross-validated)"] = optimal_plot
    trees = write_tree_pages(report.experiment.dirs, out)  # with execution.keep_trees
    page = _write_text(out / "report.html", render_html(report, images, trees))
    return ReportFiles(summary=summary, per_problem=per_problem, text=text, html=page, figures=tuple(images.values()))


def _write_text(path: Path, text: str) -> Path:
    # Write then rename, so a report being rewritten is never seen half-written.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
