"""PRM token accounting in `Usage` (sent / cached / computed / requests), and the lockstep
baseline of benchmarks/baselines against the engine's loop on scripted backends."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from ttsearch.core.backend import StepScores
from ttsearch.core.search import SearchLimits
from ttsearch.core.searcher import Searcher
from ttsearch.evaluation.datasets import Problem
from ttsearch.strategies import DVTS, BeamSearch, BestOfN
from ttsearch.testing.scripted import ScriptedPolicy, ScriptedVerifier

from .helpers import stepwise_script

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.baselines.lockstep import lockstep_batch_size, run_lockstep

SCRIPT = stepwise_script(lambda d, i, text: 0.3 + 0.1 * ((d + i) % 5), steps=3)


class CachingVerifier(ScriptedVerifier):
    """Reports, like vLLM, how much of each call's input came from a prefix cache: here
    every step but the new ones (one request per call)."""

    async def score(self, question, steps, *, first=0):  # type: ignore[no-untyped-def]
        result = await super().score(question, steps, first=first)
        cached = sum(len(s) for s in tuple(steps)[:first])
        return StepScores(result.scores, result.prompt_tokens, cached_tokens=cached, requests=1)


def _problems(k: int) -> list[Problem]:
    return [Problem(f"q{i}", "7", None, None, f"id{i}", None) for i in range(k)]


async def test_usage_counts_cached_and_computed_prm_tokens() -> None:
    verifier = CachingVerifier()
    searcher = Searcher(ScriptedPolicy(SCRIPT, max_model_len=100_000), verifier, seed=0)
    result = await searcher.solve("q", BeamSearch(n=4, width=2))
    usage = result.usage
    sent = sum(sum(len(s) for s in steps) for _, steps, _ in verifier.calls)
    cached = sum(sum(len(s) for s in steps[:first]) for _, steps, first in verifier.calls)
    assert cached > 0
    assert usage.verifier_tokens == sent
    assert usage.verifier_cached_tokens == cached
    assert usage.verifier_computed_tokens == sent - cached
    assert usage.verifier_requests == usage.verifier_calls == len(verifier.calls)
    assert all(isinstance(v, (int, float)) for v in asdict(usage).values())  # records stay numeric


async def test_a_backend_that_reports_nothing_counts_everything_computed() -> None:
    searcher = Searcher(ScriptedPolicy(SCRIPT, max_model_len=100_000), ScriptedVerifier(), seed=0)
    usage = (await searcher.solve("q", BestOfN(n=4))).usage
    assert usage.verifier_cached_tokens == 0 and usage.verifier_requests == 0
    assert usage.verifier_computed_tokens == usage.verifier_tokens > 0


@pytest.mark.parametrize(
    "strategy", [BeamSearch(n=4, width=2), DVTS(n=4, width=2), BestOfN(n=4)], ids=["beam", "dvts", "bon"]
)
async def test_lockstep_baseline_finds_what_the_engine_finds(strategy) -> None:
    problems = _problems(3)
    limits = SearchLimits(max_solution_tokens=10_000)
    incremental = ScriptedVerifier()
    engine = Searcher(ScriptedPolicy(SCRIPT, max_model_len=100_000), incremental, limits=limits, seed=0)
    ours = sorted([r async for r in engine.solve_all(problems, strategy)], key=lambda r: r.index)
    verifier = ScriptedVerifier()
    theirs = await run_lockstep(
        problems, strategy, ScriptedPolicy(SCRIPT, max_model_len=100_000), verifier, limits=limits
    )
    assert [r.index for r in theirs] == [0, 1, 2]
    for a, b in zip(ours, theirs, strict=True):
        assert [(c.text, c.step_scores) for c in a.candidates] == [(c.text, c.step_scores) for c in b.candidates]
        assert a.answer == b.answer
        assert a.usage.generated_tokens == b.usage.generated_tokens
    # The baseline rescores every step of every beam (search-and-learn's PRM has no cache).
    assert all(first == 0 for _, _, first in verifier.calls)
    if not isinstance(strategy, BestOfN):  # the engine asks only for the new steps' scores
        assert any(first > 0 for _, _, first in incremental.calls)
        assert len(verifier.calls) == len(incremental.calls)


def test_lockstep_batches_like_search_and_learn() -> None:
    assert lockstep_batch_size(BeamSearch(n=4, width=2)) == 1
    assert lockstep_batch_size(DVTS(n=4, width=2)) == lockstep_batch_size(BestOfN(n=4)) == 25


async def test_lockstep_deadline_stops_before_the_next_batch_and_reports_progress() -> None:
    import time

    problems = _problems(3)
    limits = SearchLimits(max_solution_tokens=10_000)
    done: list[int] = []
    results = await run_lockstep(
        problems,
        BeamSearch(n=4, width=2),
        ScriptedPolicy(SCRIPT, max_model_len=100_000),
        ScriptedVerifier(),
        limits=limits,
        deadline=time.perf_counter(),
        on_batch=done.append,
    )
    # Beam search runs one problem per batch: the deadline has passed, yet one batch always runs.
    assert [r.index for r in results] == [0]
    assert done == [1]
    everything = await run_lockstep(
        problems,
        BeamSearch(n=4, width=2),
        ScriptedPolicy(SCRIPT, max_model_len=100_000),
        ScriptedVerifier(),
        limits=limits,
        on_batch=done.append,
    )
    assert [r.index for r in everything] == [0, 1, 2]
    assert done == [1, 1, 2, 3]
