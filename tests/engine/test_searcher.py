"""The Searcher API and the engine loop: concurrency, failures, accounting, custom strategies."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from tests.engine.helpers import make_searcher, stepwise_script
from ttsearch.core.backend import SampleRequest
from ttsearch.core.search import SearchLimits
from ttsearch.core.searcher import Searcher
from ttsearch.core.tree import Node, SearchTree
from ttsearch.errors import BackendError, ProblemError, RequestFailedError, SearchError
from ttsearch.evaluation.datasets import Problem
from ttsearch.strategies import DVTS, BeamSearch, BestOfN, Expand, MajorityVoting, Strategy
from ttsearch.testing.scripted import EOS, ScriptedPolicy, ScriptedVerifier, decode

SCRIPT = stepwise_script(lambda d, i, text: 0.5 + 0.01 * i, steps=2)


async def test_solve_all_keeps_all_problems_in_flight_and_streams_results() -> None:
    gate = asyncio.Event()
    waiting = 0

    async def delay(request: SampleRequest) -> None:
        # The first request of every problem waits until all 6 problems have sent theirs:
        # this only finishes if no problem waits for another (no cross-problem barrier).
        nonlocal waiting
        if len(request.prompt_token_ids) < 40:
            waiting += 1
            if waiting == 6:
                gate.set()
            await gate.wait()

    searcher = make_searcher(SCRIPT, delay=delay)
    problems = [f"p{i}" for i in range(6)]
    results = [r async for r in searcher.solve_all(problems, BeamSearch(n=4, width=2))]
    assert sorted(r.index for r in results) == list(range(6))
    assert {r.problem for r in results} == set(problems)
    assert searcher.policy.max_in_flight >= 6
    assert all(r.ok and len(r.candidates) == 4 for r in results)


async def test_max_concurrent_problems_bounds_work_in_flight() -> None:
    async def delay(request: SampleRequest) -> None:
        await asyncio.sleep(0.001)

    searcher = make_searcher(SCRIPT, delay=delay, max_concurrent_problems=2)
    results = [r async for r in searcher.solve_all([f"p{i}" for i in range(5)], BestOfN(n=2))]
    assert len(results) == 5
    assert searcher.policy.max_in_flight <= 2


async def test_request_gate_bounds_policy_requests() -> None:
    async def delay(request: SampleRequest) -> None:
        await asyncio.sleep(0.001)

    searcher = make_searcher(SCRIPT, delay=delay, max_policy_requests=3)
    results = [r async for r in searcher.solve_all([f"p{i}" for i in range(6)], DVTS(n=8, width=2))]
    assert len(results) == 6
    assert searcher.policy.max_in_flight == 3


async def test_bad_problems_fail_alone() -> None:
    searcher = make_searcher(SCRIPT, max_model_len=200)
    problems = ["fine", "   ", "x" * 500, "also fine"]
    results = {r.index: r async for r in searcher.solve_all(problems, BestOfN(n=2))}
    assert results[0].ok and results[3].ok
    assert "empty" in results[1].error
    assert "context is 200" in results[2].error and results[2].candidates == ()
    with pytest.raises(ProblemError, match="empty"):
        await searcher.solve("", BestOfN(n=2))


async def test_unexpected_error_in_one_problem_fails_it_alone() -> None:
    def picky(problem: str, steps: tuple[str, ...]) -> float:
        if problem == "bad":
            raise ValueError("cannot encode this step")
        return 0.5

    searcher = make_searcher(SCRIPT)
    searcher.verifier.script = picky
    results = {r.problem: r async for r in searcher.solve_all(["ok", "bad", "fine"], BeamSearch(n=2, width=1))}
    assert results["ok"].ok and results["fine"].ok
    assert results["bad"].error == "ValueError: cannot encode this step"
    with pytest.raises(ValueError, match="cannot encode"):
        await searcher.solve("bad", BeamSearch(n=2, width=1))  # solve() raises it as it is


async def test_engine_failure_ends_the_run_with_search_error() -> None:
    calls = 0

    async def delay(request: SampleRequest) -> None:
        nonlocal calls
        calls += 1
        if calls == 5:
            raise BackendError("engine died")
        await asyncio.sleep(0.001)

    searcher = make_searcher(SCRIPT, delay=delay)
    with pytest.raises(SearchError, match="engine died"):
        async for _ in searcher.solve_all([f"p{i}" for i in range(4)], BeamSearch(n=4, width=2)):
            pass
    # the other problems' tasks were cancelled, nothing left running
    await asyncio.sleep(0.01)
    assert searcher.policy.in_flight == 0


async def test_cancelling_a_solve_cancels_its_requests() -> None:
    started = asyncio.Event()

    async def delay(request: SampleRequest) -> None:
        started.set()
        await asyncio.sleep(3600)

    searcher = make_searcher(SCRIPT, delay=delay)
    task = asyncio.create_task(searcher.solve("q", DVTS(n=8, width=2)))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert searcher.policy.in_flight == 0


async def test_closed_searcher_and_missing_verifier_are_clear_errors() -> None:
    searcher = make_searcher(SCRIPT, verifier=False)
    with pytest.raises(ValueError, match="needs a verifier"):
        await searcher.solve("q", BeamSearch(n=4))
    assert (await searcher.solve("q", MajorityVoting(n=2))).answer == "7"
    async with searcher:
        pass
    assert searcher.policy.closed
    with pytest.raises(SearchError, match="closed"):
        await searcher.solve("q", MajorityVoting(n=2))
    with pytest.raises(TypeError, match="Strategy"):
        await make_searcher(SCRIPT).solve("q", "beam")  # type: ignore[arg-type]


async def test_token_accounting_per_problem() -> None:
    searcher = make_searcher(SCRIPT)
    result = await searcher.solve("q", BeamSearch(n=4, width=2))
    generated = sum(len(n.segment_token_ids) for n in result.tree.nodes() if not n.is_root)
    usage = result.usage
    assert usage.generated_tokens == generated
    assert usage.policy_calls == len(searcher.policy.requests)
    assert usage.policy_samples == sum(r.n for r in searcher.policy.requests)
    assert usage.verifier_calls == len(searcher.verifier.calls)
    assert usage.verifier_tokens == sum(sum(len(s) for s in steps) for _, steps, _ in searcher.verifier.calls)
    assert usage.seconds > 0


async def test_continuations_send_parent_token_ids_and_keep_separators() -> None:
    searcher = make_searcher(SCRIPT)
    result = await searcher.solve("q", BeamSearch(n=2, width=1))
    prompt = searcher.policy.encode_problem("q")
    for request in searcher.policy.requests:
        assert list(request.prompt_token_ids[: len(prompt)]) == prompt
        assert request.prompt_token_ids.count(1) == 1  # one BOS, never re-templated
    best = result.candidates[0]
    assert best.text.count("\n\n") == 2  # "\n\n" after each of the 2 steps kept
    node = next(n for n in result.tree.nodes() if n.id == best.node_id)
    assert decode(node.token_ids[len(prompt) :]) == best.text
    assert len(node.steps) == 3 and node.steps[-1] == "\\boxed{7}"
    assert [s.split()[0][:2] for s in node.steps[:2]] == ["d0", "d1"]  # separators stripped
    # the verifier scored only the newest step each round (first = previous step count)
    assert sorted({first for _, _, first in searcher.verifier.calls}) == [0, 1, 2]


async def test_seeded_searches_are_reproducible() -> None:
    def script(call):  # random scores from the per-request seeded rng
        return stepwise_script(lambda d, i, text: round(call.rng.random(), 3), steps=2)(call)

    runs = []
    for _ in range(2):
        searcher = make_searcher(script, seed=123)
        result = await searcher.solve("q", BeamSearch(n=8, width=2))
        runs.append([c.text for c in result.candidates])
    assert runs[0] == runs[1]
    other = await make_searcher(script, seed=7).solve("q", BeamSearch(n=8, width=2))
    assert [c.text for c in other.candidates] != runs[0]


async def test_problem_objects_are_accepted() -> None:
    problem = Problem(problem="What is 3+4?", answer="7", subject="Algebra", level=1, unique_id="t/1", solution=None)
    result = await make_searcher(SCRIPT).solve(problem, BestOfN(n=2))
    assert result.problem == "What is 3+4?" and result.answer == "7"


# -- a user-written strategy: greedy best-first over PRM scores (as in the README) ---------


@dataclass(frozen=True, kw_only=True)
class GreedyBestFirst(Strategy):
    """Always expand the single best open node; stop after `n` finished solutions."""

    n: int = 2
    width: int = 3
    reduction: str = "last"
    selection: str = "naive"

    def start(self, tree: SearchTree) -> Sequence[Expand]:
        return [Expand(tree.root, n=self.width, temperature=0.8)]

    def update(self, tree: SearchTree, expansion: Expand, children: list[Node]) -> Sequence[Expand]:
        if len(tree.finished) >= self.n or not tree.frontier:
            return []
        (best,) = self.top(tree.frontier, 1)
        return [Expand(best, n=self.width, temperature=0.8)]


async def test_custom_strategy_runs_on_the_same_engine() -> None:
    script = stepwise_script(lambda d, i, text: [0.3, 0.9, 0.6][i], steps=2)
    searcher = make_searcher(script)
    result = await searcher.solve("q", GreedyBestFirst(n=2))
    # always the best open node (sample 1, score 0.9) is expanded
    expanded = [n for n in result.tree.nodes() if n.state == "expanded" and not n.is_root]
    assert all(n.segment_text.startswith(f"d{n.depth - 1}i1") for n in expanded)
    assert len(result.candidates) >= 2 and result.answer == "7"


async def test_mark_expanded_rejects_pruned_nodes() -> None:
    tree = SearchTree("q", [1, 2, 3])
    child = tree.add_child(
        tree.root, token_ids=(4,), text="a", steps=("a",), step_scores=(0.5,), finish="step", terminal=False
    )
    tree.prune(child)
    with pytest.raises(ValueError, match="pruned"):
        tree.mark_expanded(child)
    with pytest.raises(ValueError, match="empty"):
        SearchTree("q", [])


def test_search_limits_validate() -> None:
    with pytest.raises(ValueError):
        SearchLimits(max_solution_tokens=0)
    with pytest.raises(ValueError):
        Searcher(ScriptedPolicy(SCRIPT), ScriptedVerifier(), max_concurrent_problems=0)


async def test_tree_random_is_seeded_per_problem_and_reproducible() -> None:
    # Strategies that draw (particle resampling) take their generator from the tree:
    # the same seed and problem give the same draws; another seed or problem does not.
    from ttsearch.strategies import BestOfN
    from ttsearch.testing.scripted import EOS

    async def draws(seed: int, problem: str) -> list[float]:
        searcher = make_searcher(lambda call: f"x\n\n\\boxed{{1}}{EOS}")
        result = await searcher.solve(problem, BestOfN(n=1), seed=seed)
        rng = result.tree.random("depth", 3)
        return [rng.random() for _ in range(3)]

    assert await draws(0, "q") == await draws(0, "q")
    assert await draws(0, "q") != await draws(1, "q")
    assert await draws(0, "q") != await draws(0, "other q")


async def test_problems_finished_beside_an_engine_failure_are_yielded_before_it() -> None:
    # "first" finishes at once; the others wait until the caller has it. The caller then
    # lets them all end before it asks for more: "bad"'s engine call fails while p1 and p3
    # finish, so the three land in one asyncio.wait batch of the run loop. p1 and p3 must
    # still reach the caller (their records would otherwise be lost and redone on resume).
    release = asyncio.Event()

    async def delay(request: SampleRequest) -> None:
        problem = decode(request.prompt_token_ids)
        if problem.startswith("Q: first"):
            return
        await release.wait()
        if problem.startswith("Q: bad"):
            raise BackendError("engine died")

    searcher = make_searcher(lambda call: f"\\boxed{{7}}{EOS}", verifier=False, delay=delay)
    yielded: list[str] = []
    with pytest.raises(SearchError, match="engine died"):
        async for result in searcher.solve_all(["first", "p1", "bad", "p3"], MajorityVoting(n=2)):
            yielded.append(result.problem)
            release.set()
            await asyncio.sleep(0.05)  # everything else ends meanwhile
    assert yielded == ["first", "p1", "p3"]


async def test_an_engine_failure_still_cancels_the_problems_not_finished() -> None:
    release = asyncio.Event()

    async def delay(request: SampleRequest) -> None:
        if decode(request.prompt_token_ids).startswith("Q: bad"):
            raise BackendError("engine died")
        await release.wait()  # the others never finish on their own

    searcher = make_searcher(lambda call: f"\\boxed{{7}}{EOS}", verifier=False, delay=delay)
    with pytest.raises(SearchError, match="engine died"):
        async for _ in searcher.solve_all(["p0", "bad", "p2"], MajorityVoting(n=2)):
            pytest.fail("no problem can have finished")
    assert searcher.policy.in_flight == 0


async def test_a_request_that_fails_on_a_healthy_engine_fails_only_its_problem() -> None:
    # e.g. a server's 4xx, or a 5xx its health check clears (docs/servers.md): the problem
    # gets an error record and the run goes on, where an engine failure would stop it.
    async def delay(request: SampleRequest) -> None:
        if decode(request.prompt_token_ids).startswith("Q: bad"):
            raise RequestFailedError("HTTP 400: this request is malformed")

    searcher = make_searcher(lambda call: f"\\boxed{{7}}{EOS}", verifier=False, delay=delay)
    results = {r.problem: r async for r in searcher.solve_all(["p0", "bad", "p2"], MajorityVoting(n=2))}
    assert results["bad"].error is not None and "HTTP 400" in results["bad"].error
    assert results["p0"].answer == results["p2"].answer == "7" and results["p0"].error is None


class _FailingClosePolicy(ScriptedPolicy):
    async def close(self) -> None:
        raise RuntimeError("policy engine would not shut down")


async def test_close_closes_the_verifier_when_closing_the_policy_raises() -> None:
    verifier = ScriptedVerifier()
    searcher = Searcher(_FailingClosePolicy(SCRIPT), verifier)
    with pytest.raises(RuntimeError, match="would not shut down"):
        await searcher.close()
    assert verifier.closed
