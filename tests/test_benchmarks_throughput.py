"""benchmarks/throughput.py: its checks can fail, and its engines never outlive it."""

from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from benchmarks import throughput
from ttsearch.errors import DatasetError


def _result(index: int, *texts: str) -> Any:
    """What the checks read of a SearchResult: its index and its candidates' texts."""
    return SimpleNamespace(index=index, candidates=tuple(SimpleNamespace(text=t) for t in texts))


def test_runs_with_the_same_candidates_agree_in_any_order() -> None:
    ours = [_result(1, "b", "a"), _result(0, "x", "y")]
    theirs = [_result(0, "y", "x"), _result(1, "a", "b")]
    assert throughput.candidate_mismatches(ours, theirs) == []


def test_a_differing_candidate_fails_even_when_every_count_is_n() -> None:
    ours = [_result(0, "a", "b"), _result(1, "c", "d")]
    theirs = [_result(0, "a", "b"), _result(1, "c", "e")]
    assert throughput.candidate_mismatches(ours, theirs) == ["problem 1: different candidate solutions"]


def test_a_differing_count_or_a_missing_problem_fails() -> None:
    ours = [_result(0, "a", "b")]
    theirs = [_result(0, "a"), _result(1, "c")]
    assert throughput.candidate_mismatches(ours, theirs) == [
        "problem 0: 2 candidates vs 1",
        "problem 1: missing from the first run",
    ]


def test_only_the_problems_both_runs_have_are_compared() -> None:
    # A lockstep run cut by its time limit covers the first k problems: those are compared.
    ours = [_result(0, "a"), _result(1, "b"), _result(2, "c")]
    assert throughput.candidate_mismatches(ours, [_result(0, "a")]) == []


def test_rates_over_different_problems_are_refused() -> None:
    all_three = [_result(i, "a") for i in range(3)]
    with pytest.raises(ValueError, match="different problems"):
        throughput.speedup_on_same_problems(all_three, 3.0, all_three[:1], 2.0)
    assert throughput.speedup_on_same_problems(all_three, 3.0, all_three, 6.0) == pytest.approx(2.0)


def test_failed_checks_end_the_benchmark_with_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        throughput.exit_on_failed_checks(["beam N=16 ttsearch vs lockstep: problem 3: 16 candidates vs 15"])
    assert raised.value.code == 1
    assert "problem 3: 16 candidates vs 15" in capsys.readouterr().err
    throughput.exit_on_failed_checks([])  # nothing failed: returns


class _FakeEngine:
    def __init__(self) -> None:
        self.closed = False

    async def close(self) -> None:
        self.closed = True


async def test_a_dataset_that_fails_to_load_leaves_no_engine_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[_FakeEngine] = []

    async def fake_start_together(*factories: Any) -> list[_FakeEngine]:
        engines = [_FakeEngine() for _ in factories]
        started.extend(engines)
        return engines

    monkeypatch.setattr("ttsearch.backends.startup.start_together", fake_start_together)
    args = argparse.Namespace(
        models=tmp_path,
        dataset=tmp_path / "no-such-math500.jsonl",
        problems=4,
        methods=["beam"],
        ns=[4],
        width=2,
        temperature=0.8,
        reduction="last",
        seed=0,
        order=["ttsearch"],
        policy_kv_mib=16,
        prm_kv_mib=16,
        max_concurrent=8,
        prm_in_flight=8,
        max_policy_requests=8,
        decode_limit=False,
        max_tokens=64,
        max_model_len=256,
        max_num_seqs=None,
        policy_memory=0.3,
        prm_memory=0.3,
        gpu_kv_gib=None,
        prm_dummy_weights=False,
        lockstep_time_limit=None,
        heartbeat=0,
        block_size=None,
        eager=True,
        count_preemptions=False,
        out=tmp_path / "out.json",
    )
    with pytest.raises(DatasetError, match="not found"):
        await throughput.bench(args)
    assert [engine for engine in started if not engine.closed] == []
