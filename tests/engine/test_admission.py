"""Admission by KV cache (`Searcher(kv_admission=True)`) and request priority by admission
order (`RequestGate`), on scripted backends."""

from __future__ import annotations

import asyncio

from ttsearch.core.scheduler import RequestGate
from ttsearch.core.search import SearchLimits
from ttsearch.core.searcher import Searcher
from ttsearch.strategies import BeamSearch, BestOfN
from ttsearch.testing.scripted import ScriptedPolicy, ScriptedVerifier, decode

from .helpers import stepwise_script

SCRIPT = stepwise_script(lambda d, i, text: 0.5, steps=2)


class SizedPolicy(ScriptedPolicy):
    """A scripted policy that reports a KV cache size and counts problems in flight."""

    def __init__(self, kv_tokens: int | None) -> None:
        self.live: set[str] = set()
        self.most_live = 0

        async def delay(request) -> None:  # type: ignore[no-untyped-def]
            await asyncio.sleep(0.01)

        super().__init__(SCRIPT, max_model_len=100_000, delay=delay)
        self.kv_cache_tokens = kv_tokens

    async def sample(self, request):  # type: ignore[no-untyped-def]
        key = decode(request.prompt_token_ids).partition("\nA: ")[0]  # the problem's question
        self.live.add(key)
        self.most_live = max(self.most_live, len(self.live))
        try:
            return await super().sample(request)
        finally:
            self.live.discard(key)


def _searcher(
    kv_tokens: int | None, *, kv_admission: bool, keep_trees: bool = True, max_solution_tokens: int = 200
) -> Searcher:
    return Searcher(
        SizedPolicy(kv_tokens),
        ScriptedVerifier(),
        limits=SearchLimits(max_solution_tokens=max_solution_tokens),
        kv_admission=kv_admission,
        max_concurrent_problems=64,
        keep_trees=keep_trees,
    )


async def test_kv_admission_bounds_problems_in_flight_and_finishes_all() -> None:
    problems = [f"problem number {i:02d}" for i in range(12)]
    # BestOfN(4): 4 distinct prefixes x 100 tokens (half the solution limit) = 400 per problem.
    bounded = _searcher(1000, kv_admission=True)
    results = [r async for r in bounded.solve_all(problems, BestOfN(n=4))]
    assert sorted(r.index for r in results) == list(range(12)) and all(r.error is None for r in results)
    # Once problems finish, the estimate uses their real length (prompt + candidate tokens).
    lengths = [r.tree.prompt_length + c.num_tokens for r in results for c in r.candidates]
    learned = sum(lengths) / len(lengths)
    assert bounded.policy.most_live <= max(2, int(1000 // (4 * learned)))  # first: 2 x 400 <= 1000
    free = _searcher(1000, kv_admission=False)
    [r async for r in free.solve_all(problems, BestOfN(n=4))]
    assert free.policy.most_live > bounded.policy.most_live


async def test_the_learned_length_counts_the_prompt_when_trees_are_dropped() -> None:
    # How the experiment runner builds its Searcher (keep_trees=False). Long prompts (~320
    # tokens) and short solutions (~45): a problem's 4 prefixes need ~1460 tokens, so a
    # cache of 3000 holds 2 problems. Counting the prompt as 0 would admit all 12 at once.
    problems = [f"problem number {i:02d} " + "x" * 300 for i in range(12)]
    # The first estimate (4 x half of 2000 tokens) is over the cache: one problem runs alone
    # until it finishes and its real length is known.
    searcher = _searcher(3000, kv_admission=True, keep_trees=False, max_solution_tokens=2000)
    results = [r async for r in searcher.solve_all(problems, BestOfN(n=4))]
    assert all(r.error is None and r.tree is None for r in results) and len(results) == 12
    prompt = len(searcher.policy.encode_problem(problems[0]))
    lengths = [prompt + c.num_tokens for r in results for c in r.candidates]
    per_problem = 4 * sum(lengths) / len(lengths)
    assert searcher.policy.most_live == int(3000 // per_problem) == 2


async def test_a_problem_larger_than_the_cache_still_runs_alone() -> None:
    searcher = _searcher(10, kv_admission=True)
    results = [r async for r in searcher.solve_all(["a", "b", "c"], BeamSearch(n=4, width=2))]
    assert len(results) == 3 and all(r.candidates for r in results)
    assert searcher.policy.most_live == 1


async def test_without_a_reported_cache_size_admission_is_unbounded() -> None:
    searcher = _searcher(None, kv_admission=True)
    [r async for r in searcher.solve_all([f"p{i}" for i in range(6)], BestOfN(n=4))]
    assert searcher.policy.most_live > 2


async def test_a_full_gate_serves_the_earliest_admitted_problem_first() -> None:
    gate = RequestGate(1, 1)
    order: list[int] = []
    release = asyncio.Event()

    async def holder() -> None:
        async with gate.policy(0):
            await release.wait()

    async def waiter(priority: int) -> None:
        async with gate.policy(priority):
            order.append(priority)

    first = asyncio.create_task(holder())
    await asyncio.sleep(0)
    waiters = [asyncio.create_task(waiter(p)) for p in (5, 2, 9, 1)]
    await asyncio.sleep(0.01)
    cancelled = waiters[2]
    cancelled.cancel()  # a cancelled waiter gives up its place without taking a slot
    release.set()
    await asyncio.gather(first, *waiters, return_exceptions=True)
    assert order == [1, 2, 5]
    async with gate.policy(3):  # the slot came back
        pass
