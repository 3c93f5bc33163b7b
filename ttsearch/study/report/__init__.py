"""Reports on experiment directories: numbers, difficulty bins, plots, HTML, and trace export.

    from ttsearch.study.report import load_experiment, build_report, write_report, format_table

    exp = load_experiment(["runs/shard0", "runs/shard1"])   # one dir, or shards of one
    report = build_report(exp)
    print(format_table(report))
    files = write_report(report, "runs/report")            # summary.json, PNGs, report.html

The directory layout and record fields are the contract in docs/records.md (manifest.json,
runs/<run_id>.jsonl). `ttsearch report` and `ttsearch export` are the command-line faces.
"""

from ttsearch.errors import ExperimentError
from ttsearch.study.load import Experiment, Run, RunSpec, load_experiment
from ttsearch.study.report.export import ExportSummary, export_traces
from ttsearch.study.report.numbers import (
    ComputePoint,
    DifficultyBins,
    Report,
    RunSummary,
    StrategyReport,
    build_report,
)
from ttsearch.study.report.render import format_table, report_to_dict
from ttsearch.study.report.write import ReportFiles, write_report

__all__ = [
    "ComputePoint",
    "DifficultyBins",
    "Experiment",
    "ExperimentError",
    "ExportSummary",
    "Report",
    "ReportFiles",
    "Run",
    "RunSpec",
    "RunSummary",
    "StrategyReport",
    "build_report",
    "export_traces",
    "format_table",
    "load_experiment",
    "report_to_dict",
    "write_report",
]
