"""Benchmark runs: JSONL results, resume after a kill, evaluation, and the CLI's parsing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.engine.helpers import make_searcher
from ttsearch.cli.app import build_parser, main, parse_size
from ttsearch.errors import RecordsError as ResultsFileError
from ttsearch.evaluation.datasets import Problem
from ttsearch.records import read_records
from ttsearch.strategies import BestOfN
from ttsearch.strategies.registry import make_strategy
from ttsearch.study.benchmark import evaluate_results, run_benchmark
from ttsearch.testing.scripted import EOS

PROBLEMS = [
    Problem(
        problem=f"What is {i}+{i}?",
        answer=str(2 * i),
        subject="Algebra",
        level=1 + i % 5,
        unique_id=f"p{i}",
        solution=None,
    )
    for i in range(6)
]


def script(call):  # right for even problems, wrong for odd ones; candidate 0 always right
    a, b = call.problem.removeprefix("What is ").removesuffix("?").split("+")
    right = int(a) + int(b)
    wrong = right + 1 if int(a) % 2 and call.index else right
    return f"add\n\n\\boxed{{{wrong}}} [p={0.9 if wrong == right else 0.6}]{EOS}"


async def test_run_writes_one_line_per_problem_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "run.jsonl"
    summary = await run_benchmark(make_searcher(script), PROBLEMS[:3], BestOfN(n=4), out, progress=False)
    assert summary.done == 3 and summary.skipped == 0
    records = read_records(out)
    assert [r["unique_id"] for r in sorted(records, key=lambda r: r["unique_id"])] == ["p0", "p1", "p2"]
    assert all(len(r["candidates"]) == 4 for r in records)
    assert {r["unique_id"]: r["correct"] for r in records} == {"p0": True, "p1": False, "p2": True}

    # a kill mid-write leaves a torn last line: it is dropped and that problem reruns
    with out.open("a") as f:
        f.write('{"unique_id": "p3", "cand')
    searcher = make_searcher(script)
    with pytest.warns(UserWarning, match="run.jsonl:4: dropping a torn last line"):
        summary = await run_benchmark(searcher, PROBLEMS, BestOfN(n=4), out, progress=False)
    assert summary.skipped == 3 and summary.done == 6
    assert len(searcher.policy.requests) == 3  # only p3, p4, p5 were searched
    assert sorted(r["unique_id"] for r in read_records(out)) == [f"p{i}" for i in range(6)]


async def test_evaluate_results_gives_accuracy_at_k(tmp_path: Path) -> None:
    out = tmp_path / "run.jsonl"
    await run_benchmark(make_searcher(script), PROBLEMS, BestOfN(n=4), out, progress=False)
    report = evaluate_results([out])
    table = report.overall
    assert table.ks == (1, 2, 4)
    # Odd problems: candidate 0 right, 1-3 wrong. k=1: 1/4 of their samples; k=2: groups
    # (right, wrong) -> right on the tie, (wrong, wrong); k=4: the wrong answer wins 3:1.
    assert table.accuracy("majority", 1) == pytest.approx((3 + 3 * 0.25) / 6)
    assert table.accuracy("majority", 2) == pytest.approx((3 + 3 * 0.5) / 6)
    assert table.accuracy("majority", 4) == 0.5
    assert table.accuracy("naive", 4) == 1.0  # the right answer has the highest reward
    assert set(report.by_level) == {1, 2, 3, 4, 5}


def test_corrupt_results_file_names_the_line(tmp_path: Path) -> None:
    out = tmp_path / "bad.jsonl"
    out.write_text('{"unique_id": "a", "candidates": []}\nnot json\n{"unique_id": "b"}\n')
    with pytest.raises(ResultsFileError, match="bad.jsonl:2"):
        read_records(out)
    out.write_text('{"x": 1}\n')
    with pytest.raises(ResultsFileError, match="no unique_id"):
        read_records(out)


def test_cli_evaluate_prints_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run.jsonl"
    records = [
        {
            "unique_id": f"q{i}",
            "gold": "4",
            "subject": None,
            "level": None,
            "error": None,
            "candidates": [{"answer": a, "score": s} for a, s in (("4", 0.9), ("5", 0.1))],
        }
        for i in range(2)
    ]
    out.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(["evaluate", str(out), "--json", str(tmp_path / "r.json")]) == 0
    printed = capsys.readouterr().out
    assert "weighted" in printed and "100.0" in printed
    assert json.loads((tmp_path / "r.json").read_text())
    assert main(["evaluate", str(tmp_path / "missing.jsonl")]) == 2


def _write_records(path: Path, strategy: str, n: int, answer_lists: list[list[str]]) -> Path:
    # Old-style `ttsearch run` records (no "kind"): strategy class name + config, as written
    # by runner.result_record; candidates in stored order with decreasing scores.
    records = [
        {
            "unique_id": f"q{i}",
            "gold": "4",
            "subject": None,
            "level": None,
            "error": None,
            "strategy": strategy,
            "config": {"n": n, "width": 2},
            "candidates": [{"answer": a, "score": 0.9 - 0.1 * j} for j, a in enumerate(answers)],
        }
        for i, answers in enumerate(answer_lists)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_evaluate_reports_stepwise_strategies_at_their_n_only(tmp_path: Path) -> None:
    # Issue #12 item 1: beam search's candidates are sorted by score; the first k of one
    # N=4 search is not beam search at N=k, so N=4 is the only budget.
    beam = _write_records(tmp_path / "beam.jsonl", "BeamSearch", 4, [["4", "5", "5", "4"], ["5", "4", "4", "4"]])
    table = evaluate_results([beam]).overall
    assert table.ks == (4,)
    assert table.accuracy("majority", 4) == 1.0  # q0: 2-2 tie -> "4" (earliest); q1: "4" 3:1
    assert table.accuracy("naive", 4) == 0.5  # q0's best beam says "4", q1's says "5"
    # DVTS at N=8 returning 2 and 3 leaves: the budget is 8, not the smallest count (old ks 1, 2).
    dvts = _write_records(tmp_path / "dvts.jsonl", "DVTS", 8, [["4", "5"], ["5", "4", "4"]])
    assert evaluate_results([dvts]).overall.ks == (8,)
    # Runs at several N fill one column each; files of different strategies are refused.
    beam8 = _write_records(tmp_path / "beam8.jsonl", "BeamSearch", 8, [["4"] * 8, ["4"] * 8])
    assert evaluate_results([beam, beam8]).overall.ks == (4, 8)
    with pytest.raises(ResultsFileError, match="different strategies: BeamSearch .*, DVTS"):
        evaluate_results([beam, dvts])
    with pytest.raises(ValueError, match=r"k=2: stepwise runs at N = \[4\]"):
        evaluate_results([beam], ks=(2, 4))


def test_cli_evaluate_ks_and_budget_note(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sampled = _write_records(tmp_path / "bon.jsonl", "BestOfN", 4, [["4", "5", "5", "4"]] * 2)
    assert main(["evaluate", str(sampled), "--ks", "1,4"]) == 0
    printed = capsys.readouterr().out
    assert "N=1" in printed and "N=4" in printed and "N=2" not in printed
    assert "disjoint groups" in printed
    assert main(["evaluate", str(sampled), "--ks", "8"]) == 2
    assert "no run can be reported at budget k=8" in capsys.readouterr().err


def test_make_strategy_and_cli_parsing() -> None:
    beam = make_strategy("beam", n=16, width=4, lookahead=None)
    assert (beam.n, beam.width, beam.lookahead) == (16, 4, 0)
    with pytest.raises(ValueError, match="unknown strategy"):
        make_strategy("no_such_strategy", n=4)
    with pytest.raises(ValueError, match="no option"):
        make_strategy("majority", n=4, width=2)
    assert parse_size("128MiB") == 128 << 20 and parse_size("2g") == 2 << 30 and parse_size("4096") == 4096
    args = build_parser().parse_args(["run", "--policy", "p", "--strategy", "dvts", "--n", "8", "--out", "o.jsonl"])
    assert args.strategy == "dvts" and args.prm is None


def test_cli_run_without_prm_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "--policy", "p", "--strategy", "beam", "--n", "4", "--out", "o.jsonl"])
    assert code == 2
    assert "needs a PRM" in capsys.readouterr().err


async def test_records_carry_the_pinned_chat_template_date(tmp_path: Path) -> None:
    out = tmp_path / "run.jsonl"
    searcher = make_searcher(script)
    searcher.policy.date_string = "26 Jul 2024"  # what VLLMPolicy pins by default
    await run_benchmark(searcher, PROBLEMS[:2], BestOfN(n=2), out, progress=False)
    assert [r["date_string"] for r in read_records(out)] == ["26 Jul 2024"] * 2
    assert [r["generation_budget"] for r in read_records(out)] == [2, 2]
    # a policy without a chat-template date records None
    await run_benchmark(make_searcher(script), PROBLEMS[2:3], BestOfN(n=2), tmp_path / "b.jsonl", progress=False)
    assert read_records(tmp_path / "b.jsonl")[0]["date_string"] is None


def test_cli_run_pins_the_date_by_default() -> None:
    base = ["run", "--policy", "p", "--strategy", "dvts", "--n", "8", "--out", "o.jsonl"]
    assert build_parser().parse_args(base).date_string == "26 Jul 2024"
    assert build_parser().parse_args([*base, "--date-string", "01 Jan 2025"]).date_string == "01 Jan 2025"
