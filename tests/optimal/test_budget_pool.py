"""AdaptiveBestOfN on scripted backends: budget moves from settled problems to uncertain ones."""

from __future__ import annotations

import asyncio

import pytest

from ttsearch.core.search import SearchLimits
from ttsearch.core.searcher import Searcher
from ttsearch.strategies.adaptive import AdaptiveBestOfN, BudgetPool
from ttsearch.strategies.registry import budget_kind, make_strategy
from ttsearch.testing.scripted import EOS, ScriptCall, ScriptedPolicy, ScriptedVerifier, decode


def _script(call: ScriptCall) -> str:
    # "sure": every sample answers 7. Any other problem: the two samples of a request differ.
    answer = 7 if call.problem == "sure" else call.index
    return f"work\n\n\\boxed{{{answer}}}{EOS}"


def _searcher() -> Searcher:
    return Searcher(
        ScriptedPolicy(_script),
        ScriptedVerifier(lambda problem, steps: 0.9 if problem == "sure" else 0.3),
        limits=SearchLimits(max_solution_tokens=1000),
        seed=0,
    )


async def test_a_settled_problem_stops_early_and_its_budget_goes_to_an_uncertain_one() -> None:
    strategy = AdaptiveBestOfN(n=4, initial=2, chunk=2, max_samples=8)
    results = {r.problem: r async for r in _searcher().solve_all(["sure", "unsure"], strategy)}
    # sure: 2 samples agree at 0.9 -> uncertainty 0.1 <= 0.2: stops, deposits 2.
    assert len(results["sure"].candidates) == 2 and results["sure"].answer == "7"
    # unsure: split answers at 0.3 -> uses its own 4, then the 2 deposited.
    assert len(results["unsure"].candidates) == 6
    total = sum(r.usage.policy_samples for r in results.values())
    assert total == 8 == 4 * 2  # never more than uniform best-of-4 over the batch
    pool = strategy.pool_of(results["sure"].tree)
    assert pool is strategy.pool_of(results["unsure"].tree)  # one pool per batch
    assert (pool.deposited, pool.withdrawn, pool.balance) == (2, 2, 0)


async def test_without_deposits_nobody_exceeds_n() -> None:
    strategy = AdaptiveBestOfN(n=4, initial=2, chunk=2, max_samples=8)
    results = [r async for r in _searcher().solve_all(["unsure", "unsure again"], strategy)]
    assert [len(r.candidates) for r in results] == [4, 4]
    assert strategy.pool_of(results[0].tree).deposited == 0


async def test_one_strategy_object_serves_many_batches_each_with_its_own_pool() -> None:
    # The strategy keeps no state of its own: a second batch does not draw on what the
    # first one deposited (it used to, when the pool was a field of the strategy object).
    strategy = AdaptiveBestOfN(n=4, initial=2, chunk=2, max_samples=8)
    searcher = _searcher()
    first = [r async for r in searcher.solve_all(["sure"], strategy)]
    assert strategy.pool_of(first[0].tree).balance == 2  # deposited, never withdrawn
    second = [r async for r in searcher.solve_all(["unsure"], strategy)]
    assert len(second[0].candidates) == 4  # its own N only: its batch's pool is empty
    assert strategy.pool_of(second[0].tree).withdrawn == 0


def test_pool_never_lends_more_than_deposited() -> None:
    pool = BudgetPool()
    assert pool.withdraw(3) == 0
    pool.deposit(2)
    assert (pool.withdraw(3), pool.balance) == (2, 0)


def test_registered_reported_at_its_n_only_and_validated() -> None:
    assert isinstance(make_strategy("adaptive_best_of_n", n=4), AdaptiveBestOfN)
    assert budget_kind("adaptive_best_of_n") == "stepwise"  # candidate counts differ per problem
    with pytest.raises(ValueError, match="initial"):
        AdaptiveBestOfN(n=4, initial=5)
    with pytest.raises(ValueError, match="max_samples"):
        AdaptiveBestOfN(n=4, max_samples=3)


async def test_its_records_are_json_like_every_strategys(tmp_path) -> None:
    # Strategy.options() is the record's "config": only options, all JSON (the pool once
    # came back as a BudgetPool object, which json cannot write).
    import json

    from ttsearch.evaluation.datasets import Problem
    from ttsearch.study.benchmark import run_benchmark

    out = tmp_path / "adaptive.jsonl"
    problems = [Problem("sure", "7", None, None, "p-sure", None), Problem("open", "1", None, None, "p-open", None)]
    await run_benchmark(_searcher(), problems, AdaptiveBestOfN(n=4, initial=2, chunk=2), out, progress=False)
    config = json.loads(out.read_text().splitlines()[0])["config"]
    assert config["n"] == 4 and "pool" not in config  # the pool is the batch's, not an option


# Samples the PRM cannot score (too long for it) are dropped by the engine: drawn and paid
# for, but never among the problem's finished samples.
def _script_with_long_samples(call: ScriptCall) -> str:
    if call.problem == "sure":  # sample 0 runs past the PRM's input limit; sample 1 answers 7
        return f"{'x' * 200}\n\n\\boxed{{7}}{EOS}" if call.index == 0 else f"work\n\n\\boxed{{7}}{EOS}"
    if call.problem == "too long":
        return f"{'x' * 200}\n\n\\boxed{{{call.index}}}{EOS}"
    return f"work\n\n\\boxed{{{call.index}}}{EOS}"


def _searcher_with_a_prm_limit(*, slow: str | None = None) -> Searcher:
    async def delay(request) -> None:
        # Adversarial order: `slow`'s samples come back only after every other problem's.
        await asyncio.sleep(0.05 if slow and f"Q: {slow}\n" in decode(request.prompt_token_ids) else 0)

    return Searcher(
        ScriptedPolicy(_script_with_long_samples, delay=delay),
        ScriptedVerifier(lambda problem, steps: 0.9 if problem == "sure" else 0.3, max_input_chars=100),
        limits=SearchLimits(max_solution_tokens=1000),
        seed=0,
    )


async def test_a_dropped_sample_counts_as_drawn_so_the_batch_never_exceeds_n_per_problem() -> None:
    # "sure" draws 2, the PRM drops one, the other settles it: it used only 2 of its 4, so it
    # deposits 2 (it deposited 4 - 1 finished = 3, and "unsure" drew 4 + 3: 9 > 2 x 4).
    strategy = AdaptiveBestOfN(n=4, initial=2, chunk=2, max_samples=8)
    searcher = _searcher_with_a_prm_limit(slow="unsure")
    results = {r.problem: r async for r in searcher.solve_all(["sure", "unsure"], strategy)}
    assert results["sure"].usage.policy_samples == 2 and results["sure"].answer == "7"
    pool = strategy.pool_of(results["sure"].tree)
    assert (pool.deposited, pool.withdrawn, pool.balance) == (2, 2, 0)
    assert results["unsure"].usage.policy_samples == 6
    assert sum(r.usage.policy_samples for r in results.values()) == 8 == 4 * 2


async def test_a_problem_whose_samples_the_prm_never_scores_stops_at_its_n() -> None:
    # Every sample of "too long" is dropped: counted by finished samples it never reached N
    # and sampled forever (the wait_for below ended it).
    strategy = AdaptiveBestOfN(n=4, initial=2, chunk=2, max_samples=8)
    searcher = _searcher_with_a_prm_limit()

    async def solve() -> list:
        return [r async for r in searcher.solve_all(["too long", "unsure"], strategy)]

    results = {r.problem: r for r in await asyncio.wait_for(solve(), timeout=10)}
    assert results["too long"].usage.policy_samples == 4 and results["too long"].candidates == ()
    assert results["unsure"].usage.policy_samples == 4
    assert strategy.pool_of(results["unsure"].tree).deposited == 0
