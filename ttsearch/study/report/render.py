"""A report as text (`format_table`) and as JSON-ready data (`report_to_dict`, summary.json)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ttsearch.evaluation.tables import format_table as format_accuracy_table
from ttsearch.evaluation.tables import table_to_dict, text_grid
from ttsearch.study.report.numbers import Report, StrategyReport

SCHEMA_VERSION = 1  # bump when the layout of summary.json changes

# Usage fields shown in the compute table, in this order when present; others follow. The
# PRM's cost is what it computed; cached tokens and what was sent (both) come next.
_MAIN_USAGE = ("generated_tokens", "verifier_computed_tokens", "verifier_cached_tokens", "verifier_tokens", "seconds")


def format_table(report: Report, *, digits: int = 1) -> str:
    """The whole report as plain text: per strategy an accuracy table (selections x N),
    then compute per problem, accuracy by difficulty bin, and what the numbers mean."""
    exp = report.experiment
    lines = [
        f"experiment: {', '.join(str(d) for d in exp.dirs)} (recipe {str(exp.recipe_hash or '?')[:12]}), "
        f"{report.problems} problems, {len(exp.runs)} runs"
        + ("" if exp.manifest.get("finished_at") else " (not finished: partial results)")
    ]
    for s in report.strategies:
        lines.append("")
        lines.append(
            format_accuracy_table(
                s.overall,
                title=f"{s.label} ({s.strategy}, {s.kind}; seeds {', '.join(map(str, s.seeds))}; "
                f"own selection: {s.selection})",
                digits=digits,
            )
        )
        failed = sum(r.failed for r in s.runs)
        if failed:
            lines.append(f"({failed} failed problem(s) left out)")
    lines.append("")
    lines.append(_compute_table(report.strategies))
    for kind, b in report.bins.items():
        lines.append("")
        lines.append(_bin_table(report.strategies, kind, digits, f"from {b.samples} samples: {b.source}"))
    if any(s.by_level for s in report.strategies):
        lines.append("")
        lines.append(_bin_table(report.strategies, "level", digits, "the dataset's levels"))
    lines.append("")
    lines.extend(f"- {note}" for note in report.notes)
    return "\n".join(lines)


def usage_fields(strategies: Sequence[StrategyReport]) -> list[str]:
    found = {name for s in strategies for c in s.compute for name in c.usage}
    return [f for f in _MAIN_USAGE if f in found] + sorted(found - set(_MAIN_USAGE))


def _compute_table(strategies: Sequence[StrategyReport]) -> str:
    fields = usage_fields(strategies)
    header = ["strategy", "N", "accuracy %", *fields]
    rows = [
        [s.label, str(c.k), _pct(s.accuracy(c.k)), *(amount(c.usage.get(f)) for f in fields)]
        for s in strategies
        for c in s.compute
    ]
    return "compute per problem (means; accuracy with each strategy's own selection)\n" + text_grid(header, rows)


def bin_rows(
    strategies: Sequence[StrategyReport], kind: str, *, every_n: bool = False
) -> tuple[list[int], list[tuple[str, int, list[float]]]]:
    """Per strategy at its largest N (`every_n`: at each of its N) with its own selection:
    accuracy per bin (NaN: empty bin)."""
    if kind == "level":
        levels = sorted({lv for s in strategies for lv in s.by_level})
    else:
        levels = [1, 2, 3, 4, 5]
    rows = []
    for s in strategies:
        tables = s.by_level if kind == "level" else s.by_bin.get(kind, {})
        for k in s.ks if every_n else s.ks[-1:]:
            accuracies = [tables[lv].accuracy(s.selection, k) if lv in tables else math.nan for lv in levels]
            rows.append((s.label, k, accuracies))
    return levels, rows


def _bin_table(strategies: Sequence[StrategyReport], kind: str, digits: int, source: str) -> str:
    # Every N: which strategy (or revision ratio) wins a bin can change with the budget.
    levels, rows = bin_rows(strategies, kind, every_n=True)
    name = {"oracle": "oracle difficulty bin (pass@1)", "predicted": "predicted difficulty bin (mean PRM score)"}.get(
        kind, "MATH level"
    )
    header = ["strategy", "N", *(f"{lv}" for lv in levels)]
    body = [[label, str(k), *(_pct(a, digits) for a in accs)] for label, k, accs in rows]
    return f"accuracy % by {name}, 1 = easiest; {source}\n" + text_grid(header, body)


def _pct(x: float, digits: int = 1) -> str:
    return "-" if math.isnan(x) else f"{100 * x:.{digits}f}"


def amount(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.2f}" if abs(x) < 10 else f"{x:,.0f}"


def report_to_dict(report: Report) -> dict[str, Any]:
    """summary.json: every number of the report (per-problem scores are in per_problem.jsonl)."""
    exp = report.experiment
    manifest = {k: v for k, v in exp.manifest.items() if k != "runs"}
    return {
        "schema_version": SCHEMA_VERSION,
        "dirs": [str(d) for d in exp.dirs],
        "manifest": manifest,
        "problems": report.problems,
        "notes": list(report.notes),
        "strategies": [
            {
                "label": s.label,
                "strategy": s.strategy,
                "kind": s.kind,
                "selection": s.selection,
                "ks": list(s.ks),
                "runs": [
                    {
                        "run_id": r.run_id,
                        "n": r.n,
                        "seed": r.seed,
                        "problems": r.problems,
                        "failed": r.failed,
                        "usage_per_problem": dict(r.usage),
                    }
                    for r in s.runs
                ],
                "accuracy": table_to_dict(s.overall),
                "by_level": {str(lv): table_to_dict(t) for lv, t in s.by_level.items()},
                "by_bin": {
                    kind: {str(lv): table_to_dict(t) for lv, t in tables.items()} for kind, tables in s.by_bin.items()
                },
                "compute_per_problem": [{"k": c.k, **c.usage} for c in s.compute],
            }
            for s in report.strategies
        ],
        "bins": {
            kind: {"source": b.source, "samples": b.samples, "statistic": dict(b.statistic), "level": dict(b.level)}
            for kind, b in report.bins.items()
        },
    }
