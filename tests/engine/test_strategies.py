"""Exact semantics of the built-in strategies, on scripted backends."""

from __future__ import annotations

import asyncio

import pytest

from tests.engine.helpers import make_searcher, stepwise_script
from ttsearch.core.search import SearchLimits
from ttsearch.strategies import DVTS, BeamSearch, BestOfN, LookaheadSearch, MajorityVoting
from ttsearch.testing.scripted import EOS, ScriptCall

# -- parallel sampling ---------------------------------------------------------------------


async def test_majority_voting_samples_n_full_solutions_without_verifier() -> None:
    answers = ["3", "5", "3", "\\frac{6}{2}", "5", "9"]
    script = lambda call: f"## Step 1: x\n\nso \\boxed{{{answers[call.index]}}}{EOS}"
    searcher = make_searcher(script)
    result = await searcher.solve("q", MajorityVoting(n=6))
    (request,) = searcher.policy.requests
    assert request.n == 6 and request.stop == ()  # one request, full solutions
    assert searcher.verifier.calls == []  # majority voting never calls the verifier
    assert [c.answer for c in result.candidates] == answers
    assert result.answer == "3"  # 3 and 6/2 group together: 3 votes beat 2
    assert all(c.finish == "eos" for c in result.candidates)


async def test_weighted_best_of_n_sums_rewards_per_canonical_answer() -> None:
    # (answer, score of its single step): "1/2" appears as \frac12 and 0.5 (one group,
    # 0.4 + 0.4 = 0.8) and beats the single best candidate "2" (0.7).
    rows = [("\\frac{1}{2}", 0.4), ("2", 0.7), ("0.5", 0.4), ("3", 0.1)]
    script = lambda call: f"work\n\n\\boxed{{{rows[call.index][0]}}} [p={rows[call.index][1]}]{EOS}"
    searcher = make_searcher(script)
    weighted = await searcher.solve("q", BestOfN(n=4, selection="weighted"))
    assert weighted.answer == "\\frac{1}{2}"
    naive = await searcher.solve("q", BestOfN(n=4, selection="naive"))
    assert naive.answer == "2"
    assert weighted.select("majority") == "\\frac{1}{2}"
    # every step of every full solution is scored, in one verifier call per candidate
    assert all(first == 0 for _, _, first in searcher.verifier.calls)


@pytest.mark.parametrize(
    ("reduction", "expected_scores"),
    [("last", [0.9, 0.2]), ("min", [0.1, 0.2]), ("prod", [0.9 * 0.1 * 0.9, 0.8 * 0.2 * 0.2])],
)
async def test_reductions_apply_to_candidate_scores(reduction: str, expected_scores: list[float]) -> None:
    steps = [[0.9, 0.1, 0.9], [0.8, 0.2, 0.2]]  # step scores per candidate
    script = lambda call: (
        "".join(f"s [p={p}]\n\n" for p in steps[call.index][:-1])
        + (f"\\boxed{{{call.index}}} [p={steps[call.index][-1]}]{EOS}")
    )
    searcher = make_searcher(script)
    result = await searcher.solve("q", BestOfN(n=2, reduction=reduction, selection="naive"))
    assert [c.step_scores for c in result.candidates] == [tuple(s) for s in steps]
    assert [c.score for c in result.candidates] == pytest.approx(expected_scores)
    assert result.answer == ("0" if expected_scores[0] > expected_scores[1] else "1")


# -- beam search ---------------------------------------------------------------------------


async def test_beam_search_keeps_top_n_over_m_and_expands_each_m_times() -> None:
    # First-step scores by sample index: the top 2 of 8 are samples 5 (0.95) and 2 (0.9).
    first = [0.1, 0.3, 0.9, 0.2, 0.4, 0.95, 0.5, 0.6]
    script = stepwise_script(lambda d, i, text: first[i] if d == 0 else 0.5, steps=2)
    searcher = make_searcher(script)
    result = await searcher.solve("q", BeamSearch(n=8, width=4))
    tree = result.tree
    round1 = tree.root.children
    assert len(round1) == 8
    kept = [n for n in round1 if n.state == "expanded"]
    assert sorted(n.segment_text.split()[0] for n in kept) == ["d0i2", "d0i5"]
    assert all(n.state == "pruned" for n in round1 if n not in kept)
    requests = searcher.policy.requests
    assert [r.n for r in requests[:3]] == [8, 4, 4]  # N first steps, then M per kept beam
    assert all(r.stop == ("\n\n",) for r in requests)
    # both kept beams were continued from their own token ids (prefix = parent's tokens)
    kept_prefixes = {tuple(n.token_ids) for n in kept}
    assert {r.prompt_token_ids for r in requests[1:3]} == kept_prefixes


async def test_beam_search_stops_at_n_finished_candidates() -> None:
    # Every beam finishes at depth 2, so round 2 yields 8 finished > N=4 wanted... with
    # width 2: keep 2, expand each 2 -> 4 children per round.
    script = stepwise_script(lambda d, i, text: 0.5 + 0.01 * i, steps=1)
    searcher = make_searcher(script)
    result = await searcher.solve("q", BeamSearch(n=4, width=2))
    assert len(result.candidates) == 4
    assert all(c.finish == "eos" for c in result.candidates)
    # the search stopped as soon as N finished: round 1 (4 steps) + round 2 (4 finals)
    assert sum(r.n for r in searcher.policy.requests) == 8


async def test_beam_search_returns_best_n_when_a_round_overshoots() -> None:
    # N=4, M=2. Round 1: sample 3 finishes at once (score 0.1), 3 beams stay open, the top 2
    # are expanded twice. Round 2: all 4 children finish (0.6, 0.7, 0.6, 0.7): 5 finished
    # > N, so the search stops and returns the best 4 — the early 0.1 one is dropped.
    def script(call: ScriptCall) -> str:
        if call.text == "":
            return f"\\boxed{{9}} [p=0.1]{EOS}" if call.index == 3 else "d0 [p=0.5]\n\n"
        return f"\\boxed{{7}} [p={0.6 + 0.1 * call.index:.1f}]{EOS}"

    searcher = make_searcher(script)
    result = await searcher.solve("q", BeamSearch(n=4, width=2))
    assert [r.n for r in searcher.policy.requests] == [4, 2, 2]
    assert [c.score for c in result.candidates] == [0.7, 0.7, 0.6, 0.6]  # best first
    assert len(result.tree.finished) == 5


async def test_beam_search_max_depth_samples_to_completion_on_last_round() -> None:
    script = stepwise_script(lambda d, i, text: 0.5, steps=50)  # would take 50 steps
    searcher = make_searcher(script)
    result = await searcher.solve("q", BeamSearch(n=4, width=2, max_depth=3))
    requests = searcher.policy.requests
    assert [r.stop for r in requests] == [("\n\n",)] + [("\n\n",)] * 2 + [()] * 2
    depths = [node.depth for node in result.tree.nodes()]
    assert max(depths) == 3
    assert len(result.candidates) == 4
    assert all(c.finish == "eos" for c in result.candidates)


async def test_beam_search_spreads_n_samples_when_few_beams_remain() -> None:
    # N=16, M=2 would keep 8 beams, but 14 of 16 first steps finish at once: 2 open
    # remain, and each gets 8 samples so that every round still samples N.
    def script(call: ScriptCall) -> str:
        if call.text == "" and call.index < 14:
            return f"\\boxed{{{call.index}}}{EOS}"
        return stepwise_script(lambda d, i, text: 0.5, steps=2)(call)

    searcher = make_searcher(script)
    await searcher.solve("q", BeamSearch(n=16, width=2))
    assert [r.n for r in searcher.policy.requests[:3]] == [16, 8, 8]


async def test_truncated_steps_are_not_eos() -> None:
    script = lambda call: "x" * 500 + f"\n\n\\boxed{{1}}{EOS}"
    searcher = make_searcher(script, limits=SearchLimits(max_solution_tokens=10_000, max_step_tokens=100))
    result = await searcher.solve("q", BeamSearch(n=2, width=1))
    assert all(c.finish == "length" for c in result.candidates)
    assert all(c.num_tokens == 100 for c in result.candidates)


async def test_solution_token_limit_finishes_beams_as_length() -> None:
    script = stepwise_script(lambda d, i, text: 0.5, steps=100)
    searcher = make_searcher(script, limits=SearchLimits(max_solution_tokens=60))
    result = await searcher.solve("q", BeamSearch(n=2, width=1))
    assert all(c.finish == "length" for c in result.candidates)
    assert all(c.num_tokens <= 60 for c in result.candidates)
    assert max(r.max_tokens for r in searcher.policy.requests) <= 60


async def test_beam_search_dedupe_drops_identical_beams() -> None:
    script = stepwise_script(lambda d, i, text: 0.5, steps=2)
    same_text = lambda call: script(ScriptCall(call.problem, call.text, 0, call.request, call.rng))
    searcher = make_searcher(same_text)
    result = await searcher.solve("q", BeamSearch(n=4, width=2, dedupe=True))
    round1 = result.tree.root.children
    assert sum(n.state == "expanded" for n in round1) == 1  # 4 identical texts -> one beam


# -- DVTS ----------------------------------------------------------------------------------


async def test_dvts_subtrees_never_merge_and_return_only_finished_leaves() -> None:
    script = stepwise_script(lambda d, i, text: 0.1 * (i + 1), steps=3)
    searcher = make_searcher(script)
    result = await searcher.solve("q", DVTS(n=8, width=2))
    tree = result.tree
    subtrees = tree.root.children
    assert sorted({n.group for n in subtrees}) == [0, 1, 2, 3]
    for node in tree.nodes():
        if not node.is_root:
            assert all(a.group == node.group for a in node.ancestors() if not a.is_root)
    # each subtree expands exactly one node per round, and only its own
    for request in searcher.policy.requests:
        assert request.n == 2
    assert all(c.finish == "eos" for c in result.candidates)
    groups = [tree_node.group for c in result.candidates for tree_node in tree.nodes() if tree_node.id == c.node_id]
    assert sorted(groups) == [0, 0, 1, 1, 2, 2, 3, 3]  # at most M per subtree


async def test_dvts_keeps_best_child_including_finished_one() -> None:
    # In subtree 0 the best first child (index 1) is already finished: that subtree ends.
    def script(call: ScriptCall) -> str:
        if call.text == "" and call.index == 1:
            return f"done [p=0.99] \\boxed{{1}}{EOS}"
        return stepwise_script(lambda d, i, text: 0.5, steps=2)(call)

    searcher = make_searcher(script)
    result = await searcher.solve("q", DVTS(n=2, width=2, max_depth=10))
    assert len(searcher.policy.requests) == 1
    assert [c.answer for c in result.candidates] == ["1"]


async def test_dvts_subtrees_advance_independently() -> None:
    # Subtree 0's first expansion is slow; subtree 1 must finish meanwhile.
    slow = asyncio.Event()
    order: list[int] = []

    async def delay(request) -> None:
        text = request.prompt_token_ids
        if request.seed is not None and len(text) == first_prompt_len[0] and not started[0]:
            started[0] = True
            await slow.wait()

    started = [False]
    first_prompt_len = [0]
    script = stepwise_script(lambda d, i, text: 0.5, steps=3)
    searcher = make_searcher(script, delay=delay)
    first_prompt_len[0] = len(searcher.policy.encode_problem("q"))

    async def release_when_other_subtree_done() -> None:
        while len(searcher.policy.requests) < 5:  # subtree 1: 4 rounds (3 steps + answer)
            await asyncio.sleep(0.001)
        order.append(len(searcher.policy.requests))
        slow.set()

    result, _ = await asyncio.wait_for(
        asyncio.gather(searcher.solve("q", DVTS(n=4, width=2)), release_when_other_subtree_done()), 5
    )
    assert order == [5]
    assert len(result.candidates) == 4


# -- lookahead -----------------------------------------------------------------------------


async def test_lookahead_ranks_steps_by_greedy_rollout_score() -> None:
    # First steps: sample 0 looks best now (0.9) but its greedy continuation scores 0.1;
    # sample 1 looks worse (0.2) but leads to 0.95. Lookahead keeps 1; beam search keeps 0.
    def score(d: int, i: int, text: str) -> float:
        if d == 0:
            return [0.9, 0.2][i]
        return 0.1 if text.startswith("d0i0") else 0.95

    script = stepwise_script(score, steps=3)
    beam = make_searcher(script)
    beam_result = await beam.solve("q", BeamSearch(n=2, width=2, max_depth=2))
    look = make_searcher(script)
    look_result = await look.solve("q", LookaheadSearch(n=2, width=2, lookahead=1, max_depth=2))

    def kept(result) -> str:
        (node,) = [n for n in result.tree.root.children if n.state == "expanded"]
        return node.segment_text.split()[0]

    assert kept(beam_result) == "d0i0"
    assert kept(look_result) == "d0i1"
    rollouts = [r for r in look.policy.requests if r.temperature == 0.0]
    assert len(rollouts) == 2 and all(r.n == 1 for r in rollouts)  # one greedy step per candidate
    # the kept node keeps its own step score, not the rollout's
    (node,) = [n for n in look_result.tree.root.children if n.state == "expanded"]
    assert node.step_scores == (0.2,) and node.lookahead_score == 0.95


# -- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: BeamSearch(n=6, width=4),
        lambda: BeamSearch(n=4, max_depth=0),
        lambda: DVTS(n=5, width=2),
        lambda: BestOfN(n=0),
        lambda: BestOfN(n=4, reduction="mean"),
        lambda: BestOfN(n=4, selection="vote"),
        lambda: MajorityVoting(n=4, selection="weighted"),
        lambda: LookaheadSearch(n=4, lookahead=0),
        lambda: BeamSearch(n=4, temperature=-1),
    ],
)
def test_bad_strategy_configs_raise_value_error(make) -> None:
    with pytest.raises(ValueError):
        make()
