"""Tests for the text/rich tables, the accuracy plot and the JSON round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from ttsearch.evaluation.metrics import AccuracyReport, AccuracyTable, MethodCurve
from ttsearch.evaluation.tables import (
    format_table,
    plot_accuracy,
    report_from_dict,
    report_to_dict,
    rich_table,
    save_report_json,
)


def make_table(seeds: int = 2) -> AccuracyTable:
    per_seed_maj = ((0.30, 0.40, 0.50), (0.32, 0.44, 0.50))[:seeds]
    per_seed_w = ((0.30, 0.45, 0.625), (0.34, 0.47, 0.625))[:seeds]

    def curve(method: str, per_seed: tuple[tuple[float, ...], ...], std: tuple[float, ...]) -> MethodCurve:
        mean = tuple(sum(col) / len(col) for col in zip(*per_seed))
        return MethodCurve(method=method, mean=mean, std=std if seeds > 1 else (0.0,) * 3, per_seed=per_seed)

    return AccuracyTable(
        ks=(1, 4, 16),
        curves=(
            curve("majority", per_seed_maj, (0.01414, 0.02828, 0.0)),
            curve("weighted", per_seed_w, (0.02828, 0.01414, 0.0)),
        ),
        num_problems=500,
        num_seeds=seeds,
    )


def test_format_table_rows_are_methods_columns_are_budgets() -> None:
    text = format_table(make_table(), title="Llama-3.2-1B / MATH-500")
    lines = text.splitlines()
    assert lines[0] == "Llama-3.2-1B / MATH-500"
    assert "500 problems, 2 seed(s), mean ± std" in lines[1]
    header = lines[2].split()
    assert header == ["method", "N=1", "N=4", "N=16"]
    maj = next(line for line in lines if line.startswith("Majority vote"))
    assert "31.0 ± 1.4" in maj and "42.0 ± 2.8" in maj and "50.0 ± 0.0" in maj
    weighted = next(line for line in lines if line.startswith("Best-of-N (weighted)"))
    assert weighted.endswith("62.5 ± 0.0")
    # Columns line up: every row has the same width as the header.
    assert len({len(line) for line in lines[2:]}) == 1


def test_format_table_single_seed_has_no_std() -> None:
    text = format_table(make_table(seeds=1), digits=2)
    assert "±" not in text
    assert "30.00" in text and "62.50" in text


def test_rich_table_renders() -> None:
    console = Console(width=120, record=True, color_system=None)
    console.print(rich_table(make_table(), title="results"))
    out = console.export_text()
    assert "N=16" in out and "Majority vote" in out and "46.0 ± 1.4" in out


def test_plot_writes_a_png(tmp_path: Path) -> None:
    path = plot_accuracy(make_table(), tmp_path / "plots" / "acc.png", title="MATH-500")
    assert path == tmp_path / "plots" / "acc.png"
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000


def test_plot_axes_are_log2_with_one_line_per_method(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.figure import Figure

    seen: list[Figure] = []
    real_savefig = Figure.savefig

    def spy(self: Figure, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(self)
        return real_savefig(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    plot_accuracy(make_table(), tmp_path / "acc.svg")
    (ax,) = seen[0].axes
    assert ax.get_xscale() == "log"
    assert [line.get_label() for line in ax.get_lines()] == ["Majority vote", "Best-of-N (weighted)"]
    assert list(ax.get_lines()[1].get_ydata()) == pytest.approx([32.0, 46.0, 62.5])
    assert list(ax.get_xticks()) == [1, 4, 16]
    assert (tmp_path / "acc.svg").read_text().lstrip().startswith("<?xml")


def test_json_round_trip(tmp_path: Path) -> None:
    table = make_table()
    report = AccuracyReport(overall=table, by_level={1: table, 5: make_table(1)}, by_subject={"Algebra": table})
    d = report_to_dict(report)
    assert d["overall"]["methods"]["weighted"]["mean"] == pytest.approx([0.32, 0.46, 0.625])
    assert sorted(d["by_level"]) == ["1", "5"]
    path = save_report_json(report, tmp_path / "out" / "results.json")
    loaded = json.loads(path.read_text())
    assert loaded == json.loads(json.dumps(d))
    assert report_from_dict(loaded) == report


def test_report_from_dict_rejects_unknown_schema() -> None:
    with pytest.raises(ValueError, match="schema_version"):
        report_from_dict({"schema_version": 99})


def test_missing_budgets_print_a_dash_and_are_null_in_json() -> None:
    # Stepwise runs at N=4 and N=16 as two runs: each column has one run (NaN elsewhere).
    nan = float("nan")
    curve = MethodCurve(method="naive", mean=(0.5, 0.75), std=(0.0, 0.0), per_seed=((0.5, nan), (nan, 0.75)))
    table = AccuracyTable(ks=(4, 16), curves=(curve,), num_problems=3, num_seeds=2)
    d = report_to_dict(AccuracyReport(overall=table, by_level={}, by_subject={}))
    assert d["overall"]["methods"]["naive"]["per_seed"] == [[0.5, None], [None, 0.75]]
    json.dumps(d, allow_nan=False)
    back = report_from_dict(json.loads(json.dumps(d))).overall.curve("naive")
    assert back.per_seed[0][0] == 0.5 and back.per_seed[0][1] != back.per_seed[0][1]  # NaN again
    missing = MethodCurve(method="naive", mean=(nan, 0.75), std=(nan, 0.0), per_seed=((nan, 0.75),))
    text = format_table(AccuracyTable(ks=(4, 16), curves=(missing,), num_problems=1, num_seeds=1))
    assert text.splitlines()[-1].split() == ["Best-of-N", "(vanilla)", "-", "75.0"]
