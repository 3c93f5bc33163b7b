"""Exact semantics of MCTS (ttsearch/strategies/mcts.py), on scripted backends.

The scripted worlds name each node by its sample indices from the root ("0", "01", ...):
the policy writes "n<label> [p=<score>]" for an open step and "n<label> \\boxed{..}
[p=<score>]<eos>" for a finished solution, and the verifier reads the score back, so
every PRM value, UCT choice and visit count below is computed by hand.
"""

from __future__ import annotations

import asyncio
import math
import random
import zlib
from collections.abc import Callable

import pytest

from tests.engine.helpers import make_searcher, stepwise_script
from ttsearch.core.backend import SampleRequest
from ttsearch.core.search import SearchLimits
from ttsearch.core.searcher import Searcher
from ttsearch.core.tree import Node, SearchTree
from ttsearch.strategies.catalog import build_strategy
from ttsearch.strategies.mcts import MCTS, MCTSState
from ttsearch.testing.scripted import EOS, ScriptCall, decode

Spec = float | tuple[float, str]  # an open step's score, or (score, answer) of a finished solution


def world(nodes: dict[str, Spec]) -> Callable[[ScriptCall], str]:
    """A policy whose child `i` of node L is node L+str(i), written as `nodes` says."""

    def script(call: ScriptCall) -> str:
        label = parent_label(call.text) + str(call.index)
        spec = nodes[label]
        if isinstance(spec, tuple):
            score, answer = spec
            return f"n{label} \\boxed{{{answer}}} [p={score}]{EOS}"
        return f"n{label} [p={spec}]\n\n"

    return script


def parent_label(text: str) -> str:
    steps = [part for part in text.split("\n\n") if part.strip()]
    return steps[-1].split()[0][1:] if steps else ""


def expanded(searcher: Searcher) -> list[str]:
    """Labels of the nodes the policy was asked to expand, in request order ("" = root);
    greedy rollout requests left out."""
    return [
        parent_label(decode(r.prompt_token_ids).partition("\nA: ")[2])
        for r in searcher.policy.requests
        if r.temperature > 0
    ]


def by_label(tree: SearchTree) -> dict[str, Node]:
    return {node.segment_text.split()[0][1:]: node for node in tree.nodes() if not node.is_root}


def valued_nodes(tree: SearchTree) -> list[Node]:
    return [node for node in tree.nodes() if not node.is_root and node.state != "pruned"]


def assert_stats_consistent(strategy: MCTS, tree: SearchTree) -> None:
    """After the search: no virtual loss left; N(root) = nodes valued, W(root) = their values."""
    state = strategy.stats(tree)
    nodes = valued_nodes(tree)
    assert state.virtual == [] and state.scored == []
    assert state.visits[tree.root] == len(nodes)
    assert state.value_sums[tree.root] == pytest.approx(sum(strategy.node_value(node) for node in nodes))
    for node in nodes:
        below = [n for n in nodes if node in n.path()]
        assert state.visits[node] == len(below)


# A 3-level world: two open steps, four open steps under them, finished solutions below.
DEEP: dict[str, Spec] = {
    "0": 0.9,
    "1": 0.3,
    "00": 0.2,
    "01": 0.4,
    "10": 0.8,
    "11": 0.7,
    "000": (0.3, "3"),
    "001": (0.3, "3"),
    "010": (0.6, "1"),
    "011": (0.1, "2"),
    "100": (0.95, "5"),
    "101": (0.5, "6"),
    "110": (0.4, "7"),
    "111": (0.4, "7"),
}


# -- UCT choices, visit counts and backed-up values ------------------------------------------


async def test_uct_choices_visits_and_backed_up_values() -> None:
    # n=3, 2 children, c=1, one selection at a time. By hand (ln of the parent's N):
    # wave 2: N(root)=2: "0" 0.9+sqrt(ln2/1)=1.733 > "1" 0.3+0.833=1.133 -> "0" (children 0.2, 0.4)
    # wave 3: N(root)=4: "0" Q=1.5/3 + sqrt(ln4/3)=1.180 < "1" 0.3+sqrt(ln4)=1.477 -> "1"
    # wave 4: N(root)=6: "0" 0.5+0.773=1.273 < "1" Q=1.8/3 + 0.773=1.373; then under "1"
    #         (N=3): "10" 0.8+sqrt(ln3)=1.848 > "11" 1.748 -> "10" (finished 0.95 and 0.5)
    # wave 5: 8 samples spent, 3 levels: any choice (all at depth 2) costs 10 > 3 x 3: stop.
    strategy = MCTS(value="step", n=3, children=2, c_uct=1.0, parallel=1)
    searcher = make_searcher(world(DEEP))
    result = await searcher.solve("q", strategy)
    assert expanded(searcher) == ["", "0", "1", "10"]
    assert all(r.n == 2 and r.stop == ("\n\n",) for r in searcher.policy.requests)
    tree = result.tree
    nodes = by_label(tree)
    state = strategy.stats(tree)
    expected = {
        "0": (3, 0.9 + 0.2 + 0.4),
        "1": (5, 0.3 + 0.8 + 0.7 + 0.95 + 0.5),
        "10": (3, 0.8 + 0.95 + 0.5),
        "11": (1, 0.7),
        "100": (1, 0.95),
        "101": (1, 0.5),
    }
    for label, (visits, value_sum) in expected.items():
        assert state.visits[nodes[label]] == visits, label
        assert state.value_sums[nodes[label]] == pytest.approx(value_sum), label
    assert state.visits[tree.root] == 8
    assert state.value_sums[tree.root] == pytest.approx(4.75)
    assert (state.spent, state.levels, state.waves) == (8, 3, 4)
    assert result.usage.policy_samples == 8
    assert [c.answer for c in result.candidates] == ["5", "6"]  # finished leaves, best first
    assert result.answer == "5"
    assert_stats_consistent(strategy, tree)


async def test_c_uct_zero_is_greedy_and_skips_exhausted_subtrees() -> None:
    # c=0: always the best Q. Wave 3: "0" (Q 0.5) over "1" (0.3), then "01" (0.4) over "00".
    # Wave 4: "0" (Q 2.2/5 = 0.44) still leads; inside it "01" has only finished children,
    # so "00" is chosen although Q("01") = 1.1/3 > 0.2. Wave 5: only "1" is left, 10 > 9: stop.
    strategy = MCTS(value="step", n=3, children=2, c_uct=0.0, parallel=1)
    searcher = make_searcher(world(DEEP))
    result = await searcher.solve("q", strategy)
    assert expanded(searcher) == ["", "0", "01", "00"]
    state = strategy.stats(result.tree)
    nodes = by_label(result.tree)
    assert state.visits[nodes["0"]] == 7
    assert state.value_sums[nodes["0"]] == pytest.approx(0.9 + 0.2 + 0.4 + 0.6 + 0.1 + 0.3 + 0.3)
    assert nodes["1"].state == "open"  # never expanded
    assert [c.answer for c in result.candidates] == ["1", "3", "3", "2"]
    assert result.answer == "1"
    assert result.select("majority") == "3"
    assert_stats_consistent(strategy, result.tree)


# -- budget -------------------------------------------------------------------------------


async def test_budget_exhaustion_before_any_solution_deepens_the_deepest_leaf() -> None:
    # n=2: two samples per level. After root and "0": 4 spent, 2 levels. UCT wants "1"
    # (1.477 > 1.180), which would cost 6 > 2 x 2 with no solution finished yet: the best
    # open leaf of the deepest level, "01" (0.4 > 0.2), is expanded instead (6 <= 2 x 3).
    # Its children finish; the next choice does not fit (8 > 6): stop.
    strategy = MCTS(value="step", n=2, children=2, c_uct=1.0, parallel=1)
    searcher = make_searcher(world(DEEP))
    result = await searcher.solve("q", strategy)
    assert expanded(searcher) == ["", "0", "01"]
    state = strategy.stats(result.tree)
    assert (state.spent, state.levels) == (6, 3)
    assert result.usage.policy_samples == 6 == strategy.n * state.levels
    assert [c.answer for c in result.candidates] == ["1", "2"]


def random_world(seed: int, *, depth: int = 6) -> Callable[[ScriptCall], str]:
    """Scores and finishes drawn from the text: the same call always writes the same step."""

    def script(call: ScriptCall) -> str:
        d = call.text.count("\n\n")
        h = zlib.crc32(f"{seed}/{call.text}/{call.index}".encode())
        p = (h % 97) / 100
        if d >= depth or (d >= 2 and h % 5 == 0) or not call.request.stop:
            return f"s{h % 1000} \\boxed{{{h % 3}}} [p={p:.2f}]{EOS}"
        return f"s{h % 1000} [p={p:.2f}]\n\n"

    return script


@pytest.mark.parametrize(("n", "children", "rollout"), [(2, 2, 0), (4, 2, 0), (8, 4, 0), (6, 3, 1), (16, 4, 0)])
async def test_samples_never_exceed_n_per_level_and_a_solution_always_finishes(
    n: int, children: int, rollout: int
) -> None:
    for seed in range(4):
        strategy = MCTS(value="step", n=n, children=children, rollout=rollout)
        searcher = make_searcher(random_world(seed))
        result = await searcher.solve("q", strategy)
        state = strategy.stats(result.tree)
        levels = max(node.depth for node in result.tree.nodes())
        assert state.levels == levels
        usage = result.usage
        # policy_samples counts the rollout steps too (usage.rollout_samples of them)
        assert usage.policy_samples <= state.spent <= strategy.generation_budget * levels
        assert state.spent == strategy.expansion_cost * len(expanded(searcher))
        assert result.candidates and result.answer is not None
        assert_stats_consistent(strategy, result.tree)


async def test_every_leaf_terminal_ends_the_search_early() -> None:
    # "1" finishes at once; "0"'s children both finish: nothing is left to expand long
    # before the budget (100 samples per level) is spent.
    nodes: dict[str, Spec] = {"0": 0.5, "1": (0.9, "4"), "00": (0.1, "3"), "01": (0.2, "3")}
    strategy = MCTS(value="step", n=100, children=2)
    searcher = make_searcher(world(nodes))
    result = await searcher.solve("q", strategy)
    assert expanded(searcher) == ["", "0"]
    assert strategy.stats(result.tree).spent == 4
    assert [c.answer for c in result.candidates] == ["4", "3", "3"]
    assert result.answer == "4"  # naive: the best finished leaf
    assert result.select("weighted") == "4"  # 0.9 > 0.1 + 0.2
    assert result.select("majority") == "3"
    voted = await make_searcher(world(nodes)).solve("q", MCTS(value="step", n=100, children=2, selection="majority"))
    assert voted.answer == "3"


async def test_a_root_whose_children_all_finish_is_one_expansion() -> None:
    strategy = MCTS(value="step", n=8, children=2)
    searcher = make_searcher(world({"0": (0.7, "3"), "1": (0.2, "4")}))
    result = await searcher.solve("q", strategy)
    assert expanded(searcher) == [""]
    assert result.answer == "3"
    assert strategy.stats(result.tree).visits[result.tree.root] == 2


# -- terminal and degenerate nodes --------------------------------------------------------


async def test_truncated_steps_are_finished_leaves_valued_by_their_score() -> None:
    # Sample 0 of the root writes 200 characters without a step end: cut at
    # max_step_tokens=100 (finish "length"). It is never expanded, its PRM score (0.99)
    # is backed up like any finished leaf's, and it stays a candidate without an answer.
    def script(call: ScriptCall) -> str:
        if call.text == "" and call.index == 0:
            return "n0 [p=0.99] " + "x" * 200
        return world({"1": 0.5, "10": (0.6, "5"), "11": (0.3, "6")})(call)

    strategy = MCTS(value="step", n=8, children=2)
    limits = SearchLimits(max_solution_tokens=10_000, max_step_tokens=100)
    searcher = make_searcher(script, limits=limits)
    result = await searcher.solve("q", strategy)
    assert expanded(searcher) == ["", "1"]
    nodes = by_label(result.tree)
    truncated = nodes["0"]
    assert truncated.state == "finished" and truncated.finish == "length"
    state = strategy.stats(result.tree)
    assert (state.visits[truncated], state.value_sums[truncated]) == (1, pytest.approx(0.99))
    assert state.value_sums[result.tree.root] == pytest.approx(0.99 + 0.5 + 0.6 + 0.3)
    assert [(c.finish, c.answer) for c in result.candidates] == [("length", None), ("eos", "5"), ("eos", "6")]
    assert result.answer == "5"  # a candidate without an answer is never chosen


async def test_whitespace_only_child_is_valued_zero() -> None:
    def script(call: ScriptCall) -> str:
        if call.text == "" and call.index == 1:
            return "   \n\n"
        return world({"0": 0.3, "00": (0.6, "5"), "01": (0.2, "6")})(call)

    strategy = MCTS(value="step", n=2, children=2, parallel=1)
    searcher = make_searcher(script)
    result = await searcher.solve("q", strategy)
    blank = result.tree.root.children[1]
    assert not blank.adds_step and blank.state == "open"
    state = strategy.stats(result.tree)
    assert (state.visits[blank], state.value_sums[blank]) == (1, 0.0)
    assert expanded(searcher) == ["", "0"]  # 0.3 beats the blank; then the budget is spent


async def test_max_depth_samples_to_completion() -> None:
    strategy = MCTS(value="step", n=4, children=2, max_depth=3)
    searcher = make_searcher(stepwise_script(lambda d, i, text: 0.5 + 0.1 * i, steps=50))
    result = await searcher.solve("q", strategy)
    # the expansions of depth-2 nodes sample to EOS, every other one a single step
    for node in result.tree.nodes():
        if node.children:
            (request,) = [r for r in searcher.policy.requests if r.prompt_token_ids == tuple(node.token_ids)]
            assert request.stop == (() if node.depth == 2 else ("\n\n",))
    assert max(node.depth for node in result.tree.nodes()) == 3
    assert result.candidates and all(c.finish == "eos" for c in result.candidates)


# -- rollouts -----------------------------------------------------------------------------


async def test_rollout_values_a_step_by_its_greedy_continuation() -> None:
    # "0" scores 0.9 but its greedy next step scores 0.1; "1" scores 0.2 but leads to 0.95.
    # With rollout=1 (reduction "last") their values are 0.1 and 0.95: "1" is expanded first.
    nodes: dict[str, Spec] = {
        "0": 0.9,
        "1": 0.2,
        "00": (0.1, "9"),
        "01": (0.3, "8"),
        "10": (0.95, "5"),
        "11": (0.4, "6"),
    }
    strategy = MCTS(value="step", n=4, children=2, rollout=1, parallel=1)
    searcher = make_searcher(world(nodes))
    result = await searcher.solve("q", strategy)
    assert expanded(searcher) == ["", "1", "0"]
    greedy = [r for r in searcher.policy.requests if r.temperature == 0.0]
    assert len(greedy) == 2 and all(r.n == 1 for r in greedy)  # finished children are not rolled out
    assert result.usage.rollout_samples == 2
    state = strategy.stats(result.tree)
    labels = by_label(result.tree)
    assert strategy.node_value(labels["0"]) == 0.1 and labels["0"].step_scores == (0.9,)
    assert state.value_sums[labels["1"]] == pytest.approx(0.95 + 0.95 + 0.4)
    assert strategy.generation_budget == 8 and state.spent == 3 * 4
    greedy_only = await make_searcher(world(nodes)).solve("q", MCTS(value="step", n=4, children=2, parallel=1))
    assert greedy_only.tree.root.children[0].state == "expanded"  # without rollouts "0" (0.9) goes first


# -- parallel selections ------------------------------------------------------------------


async def test_parallel_selections_use_a_virtual_loss() -> None:
    # Wave 2 expands both root children. Wave 3, first choice: N(root)=6, "0" Q=2.1/3 +
    # sqrt(ln6/3) = 1.473 > "1" 1.5/3 + 0.773 = 1.273 -> "0", then "00" (tie with "01":
    # the earlier). The virtual loss makes N(root)=7 and N("0")=4 with no value added:
    # "0" 2.1/4 + sqrt(ln7/4) = 1.222 < "1" 0.5 + sqrt(ln7/3) = 1.305, so the second
    # choice is "10"; without it, it would have been "01" (1.473 > 1.273 again).
    nodes: dict[str, Spec] = {"0": 0.9, "1": 0.5, "00": 0.6, "01": 0.6, "10": 0.5, "11": 0.5}
    nodes |= {f"{parent}{i}": (0.5, "7") for parent in ("00", "01", "10", "11") for i in (0, 1)}
    strategy = MCTS(value="step", n=16, children=2, c_uct=1.0, parallel=2)
    searcher = make_searcher(world(nodes))
    result = await searcher.solve("q", strategy)
    labels = expanded(searcher)
    assert labels[0] == ""
    assert set(labels[1:3]) == {"0", "1"}
    assert set(labels[3:5]) == {"00", "10"}
    assert searcher.policy.max_in_flight == 2  # one wave at a time, two selections each
    assert strategy.stats(result.tree).waves == 4  # root; "0","1"; "00","10"; "01","11"
    assert_stats_consistent(strategy, result.tree)


async def test_sequential_and_default_parallelism() -> None:
    assert MCTS(value="step", n=16, children=4).selections_per_wave == 4  # n // children: beam's request shape
    assert MCTS(value="step", n=4, children=4).selections_per_wave == 1
    assert MCTS(value="step", n=16, children=4, parallel=1).selections_per_wave == 1
    searcher = make_searcher(random_world(1))
    await searcher.solve("q", MCTS(value="step", n=8, children=2, parallel=1))
    assert searcher.policy.max_in_flight == 1


# -- reproducibility and many problems ----------------------------------------------------


def _random_latency(pattern: int) -> Callable[[SampleRequest], object]:
    rng = random.Random(pattern)

    async def delay(request: SampleRequest) -> None:
        await asyncio.sleep(rng.random() * 0.003)

    return delay


def _outcome(strategy: MCTS, result) -> tuple[object, ...]:
    state: MCTSState = strategy.stats(result.tree)
    return (
        result.answer,
        tuple((c.text, c.score) for c in result.candidates),
        tuple(
            sorted(
                (node.address, state.visits[node], state.value_sums[node])
                for node in valued_nodes(result.tree)
                if node not in state.rollouts  # completions are candidates, never valued
            )
        ),
        state.spent,
    )


async def test_same_result_whatever_order_requests_finish_in() -> None:
    outcomes = set()
    for pattern in range(6):
        strategy = MCTS(value="step", n=16, children=4)
        searcher = make_searcher(random_world(3), delay=_random_latency(pattern))
        result = await searcher.solve("q", strategy)
        outcomes.add(_outcome(strategy, result))
    assert len(outcomes) == 1


async def test_solve_all_keeps_each_problems_statistics_apart() -> None:
    # One strategy object serves three problems at once (different worlds); each result
    # equals that problem's search run alone.
    def script(call: ScriptCall) -> str:
        return random_world(int(call.problem[1:]))(call)

    strategy = MCTS(value="step", n=8, children=2, rollout=1, parallel=1)  # at most 2 requests in flight per problem
    problems = ["p0", "p1", "p2"]
    searcher = make_searcher(script, delay=_random_latency(7))
    together = {r.index: r async for r in searcher.solve_all(problems, strategy)}
    assert searcher.policy.max_in_flight > 2  # the problems ran at the same time
    for index, problem in enumerate(problems):
        alone = await make_searcher(script).solve(problem, strategy)
        assert together[index].error is None
        assert _outcome(strategy, together[index]) == _outcome(strategy, alone)
    assert len({_outcome(strategy, r) for r in together.values()}) == 3


# -- configuration ------------------------------------------------------------------------


def test_budget_reporting_and_options() -> None:
    strategy = MCTS(value="step", n=16, children=4, rollout=2)
    assert strategy.budget_kind == "stepwise"
    assert strategy.generation_budget == 48  # n (rollout + 1), as lookahead's N(k+1)
    assert strategy.expansion_cost == 12
    assert strategy.live_prefixes == 4
    options = strategy.options()
    assert options["parallel"] == 4 and options["children"] == 4 and options["selection"] == "weighted"
    rebuilt = build_strategy({"mcts": MCTS}, "mcts", **options)
    assert rebuilt.options() == options
    built = build_strategy({"mcts": MCTS}, "mcts", n=8, children=2, c_uct=0.5, parallel=None)
    assert built == MCTS(n=8, children=2, c_uct=0.5)


@pytest.mark.parametrize(
    "options",
    [
        {"n": 0},
        {"n": 4, "children": 0},
        {"n": 4, "children": 5},
        {"n": 4, "c_uct": -0.1},
        {"n": 4, "c_uct": math.nan},
        {"n": 4, "c_uct": math.inf},
        {"n": 4, "rollout": -1},
        {"n": 4, "parallel": 0},
        {"n": 4, "max_depth": 0},
        {"n": 4, "temperature": -1.0},
        {"n": 4, "selection": "visits"},
    ],
)
def test_bad_parameters_raise_value_error(options: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        MCTS(**options)
    with pytest.raises(ValueError):
        build_strategy({"mcts": MCTS}, "mcts", **options)


# -- value="rollout": each new node valued by one sampled completion, kept as a candidate ----


def rollout_world(nodes: dict[str, Spec], completions: dict[str, tuple[float, str]]) -> Callable[[ScriptCall], str]:
    """`world(nodes)` for one-step requests; a to-EOS request from node L writes the one-step
    solution "n<L>r \\boxed{answer} [p=score]" of `completions[L]`."""
    steps = world(nodes)

    def script(call: ScriptCall) -> str:
        if call.request.stop:
            return steps(call)
        label = parent_label(call.text)
        score, answer = completions[label]
        return f"n{label}r \\boxed{{{answer}}} [p={score}]{EOS}"

    return script


def requests_from(searcher: Searcher, *, to_completion: bool) -> list[str]:
    """Labels of the nodes asked for one step (or, `to_completion`, for a completion)."""
    return [
        parent_label(decode(r.prompt_token_ids).partition("\nA: ")[2])
        for r in searcher.policy.requests
        if bool(r.stop) != to_completion
    ]


def test_defaults_are_rollout_values_and_a_weighted_vote() -> None:
    # the variant that beat sampling on the toy world over three seeds (docs/methods/results.md)
    strategy = MCTS(n=16)
    assert (strategy.value, strategy.selection, strategy.children, strategy.c_uct) == ("rollout", "weighted", 4, 1.414)
    assert strategy.live_prefixes == 16  # 4 selections x 4 children rolled out at once


async def test_rollout_value_uct_choices_and_candidates() -> None:
    # n=6 completions, 2 children, c=1, one selection at a time, reduction "last". By hand:
    # wave 1: root -> "0" (0.9), "1" (0.3); their completions score 0.2 and 0.8: values.
    # wave 2: N(root)=2: "0" 0.2+sqrt(ln2)=1.033 < "1" 0.8+0.833=1.633 -> "1": "10" (open,
    #         completion 0.9) and "11" (finished in one step, 0.6: its own value). 4 spent.
    # wave 3: N(root)=4: "0" 0.2+sqrt(ln4)=1.377 < "1" 2.3/3+sqrt(ln4/3)=1.446 -> "1"; under
    #         it (N=3) "11" is finished, "10" is the only leaf -> "10": "100", "101" (6 spent).
    # wave 4: 6 of 6 spent: stop. Candidates: the 5 completions and "11", n = 6 in all.
    nodes: dict[str, Spec] = {"0": 0.9, "1": 0.3, "10": 0.5, "11": (0.6, "c"), "100": 0.4, "101": 0.7}
    completions = {"0": (0.2, "a"), "1": (0.8, "b"), "10": (0.9, "d"), "100": (0.3, "e"), "101": (0.95, "f")}
    strategy = MCTS(n=6, children=2, c_uct=1.0, parallel=1, value="rollout", selection="naive")
    searcher = make_searcher(rollout_world(nodes, completions))
    result = await searcher.solve("q", strategy)
    assert requests_from(searcher, to_completion=False) == ["", "1", "10"]
    assert requests_from(searcher, to_completion=True) == ["0", "1", "10", "100", "101"]
    assert all(r.n == 1 for r in searcher.policy.requests if not r.stop)
    state = strategy.stats(result.tree)
    labels = by_label(result.tree)
    expected = {"0": (1, 0.2), "1": (5, 0.8 + 0.9 + 0.6 + 0.3 + 0.95), "10": (3, 0.9 + 0.3 + 0.95), "11": (1, 0.6)}
    for label, (visits, value_sum) in expected.items():
        assert state.visits[labels[label]] == visits, label
        assert state.value_sums[labels[label]] == pytest.approx(value_sum), label
    assert state.visits[result.tree.root] == 6
    assert all(labels[f"{label}r"] not in state.visits for label in completions)  # never selected or valued
    assert state.spent == 6 and state.virtual == [] and state.pending == {} and state.rolling == {}
    assert [c.answer for c in result.candidates] == ["f", "d", "b", "c", "e", "a"]  # best final reward first
    assert result.answer == "f"


@pytest.mark.parametrize(
    ("n", "children", "parallel"), [(4, 2, None), (7, 3, None), (16, 4, None), (16, 2, 1), (5, 5, 2)]
)
async def test_rollout_value_spends_exactly_n_completions(n: int, children: int, parallel: int | None) -> None:
    for seed in range(4):
        strategy = MCTS(n=n, children=children, parallel=parallel, value="rollout")
        searcher = make_searcher(random_world(seed))
        result = await searcher.solve("q", strategy)
        state = strategy.stats(result.tree)
        step_requests = [r for r in searcher.policy.requests if r.stop]
        # every child is a candidate: its own (finished in one step) or its completion's
        assert state.spent == sum(r.n for r in step_requests) == len(result.tree.finished)
        assert state.spent == n or not _open_leaf_left(result.tree, state)
        assert all(r.n <= children for r in step_requests)
        assert len(result.candidates) == state.spent and result.answer is not None
        assert state.visits[result.tree.root] == state.spent  # each child valued once
        assert state.virtual == [] and state.pending == {} and state.rolling == {}


def _open_leaf_left(tree: SearchTree, state: MCTSState) -> bool:
    return any(n.state != "finished" and n not in state.rollouts for n in tree.nodes() if not n.is_root)


async def test_rollout_value_same_result_whatever_order_requests_finish_in() -> None:
    outcomes = set()
    for pattern in range(4):
        strategy = MCTS(n=12, children=3, value="rollout")
        searcher = make_searcher(random_world(5), delay=_random_latency(pattern))
        result = await searcher.solve("q", strategy)
        outcomes.add(_outcome(strategy, result))
    assert len(outcomes) == 1


@pytest.mark.parametrize("options", [{"n": 4, "value": "visits"}, {"n": 4, "value": "rollout", "rollout": 1}])
def test_bad_value_options_raise_value_error(options: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="value"):
        build_strategy({"mcts": MCTS}, "mcts", **options)
