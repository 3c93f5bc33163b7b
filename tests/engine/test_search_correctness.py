"""Search semantics that a review found wrong (issue #12), each on scripted backends."""

from __future__ import annotations

import asyncio
import random

import pytest

from tests.engine.helpers import make_searcher, stepwise_script
from ttsearch.core.backend import SampleRequest
from ttsearch.strategies import DVTS, BeamSearch, BestOfN, LookaheadSearch
from ttsearch.testing.scripted import EOS

# -- ties are broken by tree position, not by completion order ------------------------------


def _tied_script():
    # Every step scores 0.5; the answer names the path, so any tie-break shows in it.
    return stepwise_script(
        lambda d, i, text: 0.5,
        steps=3,
        answer=lambda text, i: "".join(part.split()[0] for part in text.split("\n\n") if part) + f"e{i}",
    )


def _random_latency(pattern: int):
    rng = random.Random(pattern)

    async def delay(request: SampleRequest) -> None:
        await asyncio.sleep(rng.random() * 0.003)

    return delay


@pytest.mark.parametrize("make", [lambda: BeamSearch(n=4, width=2), lambda: DVTS(n=4, width=2)], ids=["beam", "dvts"])
async def test_equal_scores_give_the_same_result_under_any_latency(make) -> None:
    outcomes = set()
    for pattern in range(8):
        searcher = make_searcher(_tied_script(), delay=_random_latency(pattern))
        result = await searcher.solve("q", make())
        outcomes.add((result.answer, tuple((c.text, c.score) for c in result.candidates)))
    assert len(outcomes) == 1


# -- a failed problem records what it spent; an over-long PRM input drops one candidate -----


async def test_a_failed_problem_records_the_compute_it_spent() -> None:
    def picky(problem: str, steps: tuple[str, ...]) -> float:
        if len(steps) == 2:  # the second round fails
            raise ValueError("cannot score this")
        return 0.5

    searcher = make_searcher(stepwise_script(lambda d, i, text: 0.5, steps=3))
    searcher.verifier.script = picky
    (result,) = [r async for r in searcher.solve_all(["q"], BeamSearch(n=2, width=1))]
    assert result.error == "ValueError: cannot score this"
    usage = result.usage
    assert usage.policy_calls == len(searcher.policy.requests) >= 2
    assert usage.policy_samples == sum(r.n for r in searcher.policy.requests)
    assert usage.generated_tokens > 0 and usage.verifier_calls >= 1 and usage.seconds > 0


async def test_an_over_long_prm_input_drops_that_candidate_and_the_search_goes_on() -> None:
    # Sample 1's first step is long: the PRM cannot take it, every other beam goes on.
    def score(d: int, i: int, text: str) -> float:
        return 0.5

    def script(call):
        out = stepwise_script(score, steps=2)(call)
        return "long " * 40 + out if call.text == "" and call.index == 1 else out

    searcher = make_searcher(script)
    searcher.verifier.max_input_chars = 150
    result = await searcher.solve("q", BeamSearch(n=4, width=2))
    assert result.ok and len(result.candidates) == 4
    (dropped,) = [n for n in result.tree.root.children if n.segment_text.startswith("long")]
    assert dropped.finish == "length" and dropped.state == "pruned" and not dropped.children
    assert all("long" not in c.text for c in result.candidates)

    searcher = make_searcher(script)
    searcher.verifier.max_input_chars = 150
    best_of = await searcher.solve("q", BestOfN(n=3))
    assert best_of.ok and len(best_of.candidates) == 2  # sample 1 dropped, samples 0 and 2 kept


# -- greedy (T=0) expansions decode once and count once --------------------------------------


async def test_greedy_expansions_decode_once_and_count_what_was_computed() -> None:
    searcher = make_searcher(stepwise_script(lambda d, i, text: 0.5, steps=2))
    result = await searcher.solve("q", BeamSearch(n=4, width=2, temperature=0.0))
    requests = searcher.policy.requests
    assert all(r.n == 1 for r in requests)  # one decode stands for the n identical samples
    usage = result.usage
    assert usage.policy_samples == len(requests)
    one_per_request = [n for n in result.tree.nodes() if not n.is_root and n.slot[1] == 0]
    assert len(one_per_request) == len(requests)
    assert usage.generated_tokens == sum(len(n.segment_token_ids) for n in one_per_request)
    assert usage.verifier_calls == len(searcher.verifier.calls) == len(requests)
    # the strategy still gets the n children it asked for (identical ones)
    assert len(result.tree.root.children) == 4
    assert len({c.segment_text for c in result.tree.root.children}) == 1
    assert len(result.candidates) == 4


# -- a step with no text is ranked last, not given its parent's scores ------------------------


async def test_a_whitespace_only_step_does_not_inherit_its_parents_score() -> None:
    # Round 1: one beam (0.3). Round 2: sample 0 writes only whitespace, sample 1 a real
    # step scored 0.2. With "last", inheriting 0.3 would make the empty step win.
    def script(call):
        if call.text == "":
            return "first [p=0.3]\n\n"
        if call.text == "first [p=0.3]\n\n":
            return " \n\n" if call.index == 0 else "real [p=0.2]\n\n"
        return f"\\boxed{{7}} [p=0.9]{EOS}"

    searcher = make_searcher(script)
    result = await searcher.solve("q", BeamSearch(n=2, width=2, reduction="last", max_depth=3))
    (first,) = [n for n in result.tree.root.children if n.state == "expanded"]
    empty, real = first.children[:2]
    assert empty.segment_text == " \n\n" and real.segment_text.startswith("real")
    assert real.state == "expanded" and empty.state == "pruned"


# -- lookahead: score only what is used, rank with the configured reduction, report N(k+1) --


def _rollout_world():
    # First steps: sample 0 scores 0.9 and its greedy rollout 0.6 then 0.5; sample 1 scores
    # 0.4 and its rollout 0.9 then 0.8.
    def score(d: int, i: int, text: str) -> float:
        if d == 0:
            return [0.9, 0.4][i % 2]
        rollout = [0.6, 0.5] if text.startswith("d0i0") else [0.9, 0.8]
        return rollout[min(d - 1, 1)]

    return stepwise_script(score, steps=4)


def _kept_first_step(result) -> str:
    (node,) = [n for n in result.tree.root.children if n.state == "expanded"]
    return node.segment_text.split()[0]


async def test_lookahead_with_last_scores_only_the_final_rollout_step() -> None:
    searcher = make_searcher(_rollout_world())
    result = await searcher.solve("q", LookaheadSearch(n=2, width=2, lookahead=2, reduction="last", max_depth=10))
    # each call scores one position (every sample here is one step): a candidate's own new
    # step, or the end of its rollout; never a rollout's intermediate step
    assert all(len(steps) - first == 1 for _, steps, first in searcher.verifier.calls)
    first_steps = result.tree.root.children
    assert [n.lookahead_scores for n in first_steps] == [(0.5,), (0.8,)]
    assert [n.step_scores for n in first_steps] == [(0.9,), (0.4,)]
    assert _kept_first_step(result) == "d0i1"  # the paper's rule: the rollout's last score


async def test_lookahead_ranks_with_the_configured_reduction_over_steps_and_rollout() -> None:
    searcher = make_searcher(_rollout_world())
    result = await searcher.solve("q", LookaheadSearch(n=2, width=2, lookahead=2, reduction="min", max_depth=3))
    first_steps = result.tree.root.children
    assert [n.lookahead_scores for n in first_steps] == [(0.6, 0.5), (0.9, 0.8)]  # min needs them all
    # min(0.9, 0.6, 0.5) = 0.5 beats min(0.4, 0.9, 0.8) = 0.4 (the last score alone: 0.5 < 0.8)
    assert _kept_first_step(result) == "d0i0"


async def test_lookahead_reports_its_generation_budget() -> None:
    strategy = LookaheadSearch(n=4, width=2, lookahead=2, max_depth=3)
    assert strategy.generation_budget == 12  # N(k+1) samples per round, as the paper counts
    assert BeamSearch(n=4, width=2).generation_budget == 4
    assert DVTS(n=4, width=2).generation_budget == 4 and BestOfN(n=8).generation_budget == 8
    searcher = make_searcher(_rollout_world())
    result = await searcher.solve("q", strategy)
    rollouts = [r for r in searcher.policy.requests if r.temperature == 0.0]
    assert result.usage.rollout_samples == len(rollouts) > 0
    assert result.usage.policy_samples == sum(r.n for r in searcher.policy.requests)


async def test_a_rollout_too_long_for_the_prm_leaves_the_step_ranked_by_its_own_scores() -> None:
    searcher = make_searcher(_rollout_world())
    searcher.verifier.max_input_chars = 20  # one step fits, a step and its 2-step rollout do not
    result = await searcher.solve("q", LookaheadSearch(n=2, width=2, lookahead=2, max_depth=10))
    first_steps = result.tree.root.children
    assert [n.lookahead_scores for n in first_steps] == [(), ()]
    assert _kept_first_step(result) == "d0i0"  # 0.9 > 0.4 by the steps' own scores
    assert result.ok
