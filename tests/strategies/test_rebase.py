"""REBASE (reward-balanced search): exact allocations and budget accounting, on scripted backends.

The scripted worlds name each node by its path of sample indices ("1/0": sample 0 of the
expansion of sample 1 of the root) and give it a known PRM score, so every allocation
below is computed by hand from the formula (docs/methods/rebase.md).
"""

from __future__ import annotations

import asyncio
import math
import random
import re
from collections.abc import Callable, Collection, Mapping

import pytest

from ttsearch.core.search import SearchLimits
from ttsearch.core.searcher import Searcher
from ttsearch.core.tree import Node, SearchTree
from ttsearch.strategies.beam import BeamSearch
from ttsearch.strategies.catalog import build_strategy
from ttsearch.strategies.rebase import REBASE, balance
from ttsearch.testing.scripted import EOS, ScriptCall, ScriptedPolicy, ScriptedVerifier, score_from_tag

NAN = float("nan")
PATH = re.compile(r"n(\d+(?:/\d+)*) ")
WIDE = SearchLimits(max_solution_tokens=10_000)


def label(node: Node) -> str:
    """A node's path of sample indices, as the world script wrote it."""
    return PATH.findall(node.segment_text)[-1]


def world(
    scores: Mapping[str, float] | Callable[[str], float] | None = None,
    *,
    ends: Collection[str] = (),
    steps: int = 2,
    default: float = 0.5,
    answer: Callable[[str], str] = lambda path: "7",
    text: Mapping[str, str] | None = None,
) -> Callable[[ScriptCall], str]:
    """A model whose node `path` scores `scores[path]` (else `default`); a node in `ends`, or
    at depth `steps`, writes a boxed answer and EOS. `text[path]` replaces a node's text."""

    def script(call: ScriptCall) -> str:
        parents = PATH.findall(call.text)
        path = f"{parents[-1]}/{call.index}" if parents else str(call.index)
        if text and path in text:
            return text[path]
        p = scores(path) if callable(scores) else (scores or {}).get(path, default)
        if path in ends or path.count("/") >= steps or not call.request.stop:
            return f"n{path} \\boxed{{{answer(path)}}} [p={p}]{EOS}"
        return f"n{path} [p={p}]\n\n"

    return script


def searcher_for(
    script: Callable[[ScriptCall], str],
    *,
    verifier: ScriptedVerifier | None = None,
    limits: SearchLimits = WIDE,
    **kwargs,
) -> Searcher:
    policy = ScriptedPolicy(script, delay=kwargs.pop("delay", None))
    return Searcher(policy, verifier or ScriptedVerifier(), limits=limits, **kwargs)


def allocation(tree: SearchTree, depth: int) -> dict[str, int]:
    """Children per expanded node at `depth` (dropped children included)."""
    return {label(n): len(n.children) for n in tree.nodes() if n.depth == depth and n.children}


def sampled_per_depth(tree: SearchTree) -> list[int]:
    """Samples drawn at each depth (1, 2, ...): the children of the nodes one level up."""
    counts: dict[int, int] = {}
    for node in tree.nodes():
        if node.children:
            counts[node.depth + 1] = counts.get(node.depth + 1, 0) + len(node.children)
    return [counts[d] for d in sorted(counts)]


# -- the allocation formula ---------------------------------------------------------------


def test_balance_known_scores() -> None:
    # T=0.2; weights exp((s - 0.9) / 0.2), best first: 0.9 -> 1, 0.8 -> .6065, 0.7 -> .3679,
    # 0.6 -> .2231, 0.5 -> .1353, 0.4 -> .0821, 0.3 -> .0498, 0.1 -> .0183; sum 2.4831.
    # 0.9: ceil(8 x 1 / 2.4831 = 3.22) = 4, left 4, rest 1.4831; 0.8: ceil(4 x .6065 / 1.4831
    # = 1.64) = 2, left 2, rest .8766; 0.7: ceil(2 x .3679 / .8766 = .84) = 1, left 1;
    # 0.6: ceil(1 x .2231 / .5087 = .44) = 1, left 0: the rest get nothing.
    scores = [0.6, 0.9, 0.5, 0.8, 0.1, 0.7, 0.3, 0.4]
    assert balance(scores, 8, 0.2) == [1, 4, 0, 2, 0, 1, 0, 0]
    assert balance([0.9, 0.5, 0.1], 8, 0.2) == [7, 1, 0]  # ceil(6.93) = 7, then ceil(.88) = 1


@pytest.mark.parametrize(
    ("scores", "width", "expected"),
    [
        ([0.5, 0.5, 0.5], 4, [2, 1, 1]),  # ties: the earlier node first (float32 gives [2, 2, 0])
        ([0.3] * 5, 5, [1] * 5),  # equal scores, width = nodes: one each (float32: [1, 1, 1, 2, 0])
        ([0.0, 0.0, 0.0], 8, [3, 3, 2]),  # a PRM returning 0 for everything: uniform
        ([NAN, NAN, NAN], 8, [3, 3, 2]),  # nothing usable: uniform as well
        ([None, None], 3, [2, 1]),
        ([NAN, 0.5, 0.5], 3, [0, 2, 1]),  # a NaN score weighs 0
        ([0.5, None, 0.1, math.inf], 2, [2, 0, 0, 0]),  # so do None and infinities
        ([0.5, 0.5, 0.5, 0.5, 0.5], 2, [1, 1, 0, 0, 0]),  # width below the nodes: never above it
        ([0.2], 5, [5]),
        ([0.9, 0.1], 0, [0, 0]),
        ([], 4, []),
    ],
)
def test_balance_edge_cases(scores: list[float | None], width: int, expected: list[int]) -> None:
    assert balance(scores, width, 0.2) == expected


def test_balance_extreme_temperatures() -> None:
    # T -> 0: the best takes all (no overflow: the reference's float32 exp(0.9 / 0.005) is inf
    # and its allocation crashes on NaN).
    assert balance([0.9, 0.8], 4, 1e-6) == [4, 0]
    assert balance([0.9, 0.2], 4, 0.005) == [4, 0]
    # T -> inf: near-uniform, and the ceiling favours the better node: ceil(4 x 0.5000002) = 3.
    assert balance([0.9, 0.1], 4, 1e6) == [3, 1]


def test_balance_allocates_exactly_the_width() -> None:
    rng = random.Random(0)
    for _ in range(3000):
        scores: list[float | None] = [
            rng.choice([round(rng.random(), rng.choice([1, 2, 3])), 0.0, NAN, None]) for _ in range(rng.randint(1, 12))
        ]
        width = rng.randint(0, 40)
        counts = balance(scores, width, rng.choice([0.01, 0.1, 0.2, 1.0, 10.0]))
        assert sum(counts) == width and all(k >= 0 for k in counts)
        # the served nodes are the best ones: nobody outranked by a node that got nothing gets any
        ranked = sorted(
            range(len(scores)),
            key=lambda i: (
                scores[i] is None or math.isnan(scores[i]),
                -(scores[i] or 0.0) if scores[i] is not None and not math.isnan(scores[i]) else 0.0,
                i,
            ),
        )
        served = [counts[i] > 0 for i in ranked]
        assert served == sorted(served, reverse=True)
    # inputs where the reference's float32 arithmetic allocates one more than the width
    assert sum(balance([0.29, 0.292, 0.81], 22, 0.2)) == 22


def test_balance_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="width"):
        balance([0.5], -1, 0.2)
    for temperature in (0.0, -1.0, NAN, math.inf):
        with pytest.raises(ValueError, match="temperature"):
            balance([0.5], 1, temperature)


# -- construction -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"n": 0}, "n must be >= 1"),
        ({"n": -3}, "n must be >= 1"),
        ({"n": 4, "softmax_temperature": 0.0}, "softmax_temperature must be a finite number > 0"),
        ({"n": 4, "softmax_temperature": -0.2}, "softmax_temperature"),
        ({"n": 4, "softmax_temperature": NAN}, "softmax_temperature"),
        ({"n": 4, "softmax_temperature": math.inf}, "softmax_temperature"),
        ({"n": 4, "max_depth": 0}, "max_depth must be >= 1"),
        ({"n": 4, "temperature": -1.0}, "temperature must be >= 0"),
        ({"n": 4, "reduction": "mean"}, "reduction"),
        ({"n": 4, "selection": "best"}, "selection"),
    ],
)
def test_bad_parameters_raise_at_construction(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        REBASE(**options)
    with pytest.raises(ValueError, match=message):  # as recipes and the CLI build it
        build_strategy({"rebase": REBASE}, "rebase", **options)


def test_builds_from_options_with_beam_comparable_budget() -> None:
    strategy = build_strategy({"rebase": REBASE}, "rebase", n=16, softmax_temperature=0.5, temperature=1.0)
    assert isinstance(strategy, REBASE)
    assert strategy.options() == {
        "n": 16,
        "temperature": 1.0,
        "top_p": 1.0,
        "reduction": "last",
        "selection": "weighted",
        "softmax_temperature": 0.5,
        "max_depth": 40,
    }
    assert strategy.generation_budget == BeamSearch(n=16).generation_budget == 16
    assert strategy.budget_kind == "stepwise"
    assert strategy.live_prefixes == 16
    assert strategy.name == "REBASE"
    with pytest.raises(ValueError, match="needs option"):
        build_strategy({"rebase": REBASE}, "rebase")


# -- the search, end to end ---------------------------------------------------------------


async def test_known_allocations_per_depth() -> None:
    first = dict(zip("01234567", [0.6, 0.9, 0.5, 0.8, 0.1, 0.7, 0.3, 0.4], strict=True))
    # depth 2 (children of the kept nodes), in tree order: 0/0, 1/0..1/3, 3/0, 3/1, 5/0
    second = {"0/0": 0.1, "1/0": 0.3, "1/1": 0.4, "1/2": 0.5, "1/3": 0.6, "3/0": 0.95, "3/1": 0.2, "5/0": 0.7}
    searcher = searcher_for(world({**first, **second}, steps=2))
    result = await searcher.solve("q", REBASE(n=8, softmax_temperature=0.2))
    tree = result.tree
    assert tree is not None
    assert searcher.policy.requests[0].n == len(tree.root.children) == 8  # the root: one request of N
    assert allocation(tree, 1) == {"1": 4, "3": 2, "5": 1, "0": 1}  # test_balance_known_scores
    assert {label(n) for n in tree.root.children if n.state == "pruned"} == {"2", "4", "6", "7"}
    # depth 2, best first: 0.95 (w 1), 0.7 (.2865), 0.6 (.1738), 0.5 (.1054), 0.4 (.0639),
    # 0.3 (.0388), 0.2 (.0235), 0.1 (.0143); sum 1.7062: 0.95 takes ceil(8 / 1.7062 = 4.69) = 5,
    # 0.7 ceil(3 x .2865 / .7062 = 1.22) = 2, 0.6 ceil(1 x .1738 / .4197 = .41) = 1, the rest 0.
    assert allocation(tree, 2) == {"3/0": 5, "5/0": 2, "1/3": 1}
    assert sampled_per_depth(tree) == [8, 8, 8]
    assert len(result.candidates) == 8 and all(c.finish == "eos" for c in result.candidates)
    assert all(n.depth == 3 for n in tree.finished)
    assert [c.score for c in result.candidates] == sorted((c.score for c in result.candidates), reverse=True)


async def test_nodes_finishing_at_different_depths_leave_the_budget() -> None:
    # N=6. Depth 1: samples 0 and 1 finish (EOS) -> 4 left for the 4 open nodes. Depth 2:
    # two children finish -> 2 left. Depth 3: the last two finish (steps=2).
    scores = {"2": 0.9, "3": 0.8, "4": 0.7, "5": 0.6}
    ends = {"0", "1", "2/0", "2/1"}
    searcher = searcher_for(world(scores, ends=ends, steps=2))
    result = await searcher.solve("q", REBASE(n=6))
    tree = result.tree
    assert tree is not None
    assert sampled_per_depth(tree) == [6, 4, 2]
    # depth 1, 4 open: weights 1, .6065, .3679, .2231 (sum 2.1975): 0.9 takes ceil(1.82) = 2,
    # 0.8 ceil(2 x .6065 / 1.1975 = 1.01) = 2: nodes 4 and 5 get nothing.
    assert allocation(tree, 1) == {"2": 2, "3": 2}
    assert allocation(tree, 2) == {"3/0": 1, "3/1": 1}  # equal scores (0.5): one each
    assert sorted(n.depth for n in tree.finished) == [1, 1, 2, 2, 3, 3]
    assert len(result.candidates) == 6
    assert [r.n for r in searcher.policy.requests] == [6, 2, 2, 1, 1]


async def test_all_zero_scores_split_the_width_uniformly() -> None:
    # A PRM that says 0 for everything: every open node weighs the same, and the width left
    # always equals the open nodes, so each gets exactly one child (parallel sampling).
    searcher = searcher_for(world(lambda path: 0.0, steps=3))
    result = await searcher.solve("q", REBASE(n=5))
    assert [r.n for r in searcher.policy.requests] == [5] + [1] * 15
    assert sampled_per_depth(result.tree) == [5, 5, 5, 5]
    assert len(result.candidates) == 5 and result.answer == "7"


def _tree_with_children(strategy: REBASE, scores: list[tuple[float, ...]], texts: list[str] | None = None):
    """A tree after the first depth (the engine's part done by hand): root -> scored children."""
    tree = SearchTree("q", [1, 2, 3])
    (expansion,) = strategy.start(tree)
    tree.mark_expanded(tree.root)
    children = [
        tree.add_child(
            tree.root,
            token_ids=(5,),
            text=(texts[i] if texts else f"n{i} step\n\n"),
            steps=(() if texts and not texts[i].strip() else (f"n{i} step",)),
            step_scores=s,
            finish="step",
            terminal=False,
            slot=(0, i),
        )
        for i, s in enumerate(scores)
    ]
    return tree, expansion, children


def test_nan_scores_weigh_nothing() -> None:
    strategy = REBASE(n=3)
    tree, expansion, children = _tree_with_children(strategy, [(NAN,), (0.5,), (0.5,)])
    nexts = strategy.update(tree, expansion, children)
    assert [(e.node, e.n) for e in nexts] == [(children[1], 2), (children[2], 1)]
    assert children[0].state == "pruned"
    # every score NaN: nothing to go by, so a uniform split (no crash, no zero allocation)
    tree, expansion, children = _tree_with_children(strategy, [(NAN,), (NAN,), (NAN,)])
    assert [(e.node, e.n) for e in strategy.update(tree, expansion, children)] == [(c, 1) for c in children]


def test_a_child_that_added_no_step_weighs_nothing() -> None:
    strategy = REBASE(n=4)
    texts = ["n0 step\n\n", "   \n\n", "n2 step\n\n", "n3 step\n\n"]
    tree, expansion, children = _tree_with_children(strategy, [(0.5,), (), (0.5,), (0.5,)], texts)
    nexts = strategy.update(tree, expansion, children)
    assert [(e.node, e.n) for e in nexts] == [(children[0], 2), (children[2], 1), (children[3], 1)]
    assert children[1].state == "pruned"


async def test_a_nan_scored_node_is_dropped_and_its_share_goes_to_others() -> None:
    verifier = ScriptedVerifier(lambda q, steps: NAN if steps[-1].startswith("n0 ") else score_from_tag(q, steps))
    searcher = searcher_for(world(steps=1), verifier=verifier)
    result = await searcher.solve("q", REBASE(n=3))
    tree = result.tree
    assert tree is not None
    assert allocation(tree, 1) == {"1": 2, "2": 1}
    assert result.ok and len(result.candidates) == 3
    assert not any(math.isnan(s) for c in result.candidates for s in c.step_scores)


async def test_a_frontier_of_finished_nodes_ends_the_search() -> None:
    # Every first step is a whole solution: one request, N candidates, weighted vote.
    rows = {"0": ("3", 0.3), "1": ("5", 0.8), "2": ("3", 0.3), "3": ("3", 0.3)}
    script = world({p: s for p, (_, s) in rows.items()}, ends=set(rows), answer=lambda path: rows[path][0])
    searcher = searcher_for(script)
    result = await searcher.solve("q", REBASE(n=4))
    assert [r.n for r in searcher.policy.requests] == [4]
    assert result.selection == "weighted"
    assert result.answer == "3"  # 0.3 x 3 = 0.9 > 0.8
    assert result.select("naive") == "5"
    assert [c.score for c in result.candidates] == [0.8, 0.3, 0.3, 0.3]  # best first


@pytest.mark.parametrize(
    "limits",
    [
        SearchLimits(max_solution_tokens=10_000, max_step_tokens=40),  # the step is cut
        SearchLimits(max_solution_tokens=120),  # the solution is cut
    ],
)
async def test_a_truncated_step_counts_as_a_finished_solution(limits: SearchLimits) -> None:
    # Node "1" writes 300 characters without a separator: finish="length", terminal. It takes
    # one unit of the width, as an EOS would: the later depths sample N - 1.
    script = world(steps=2, text={"1": "n1 " + "x" * 300 + " [p=0.9]\n\n"})
    searcher = searcher_for(script, limits=limits)
    result = await searcher.solve("q", REBASE(n=4))
    tree = result.tree
    assert tree is not None
    assert sampled_per_depth(tree) == [4, 3, 3]
    cut = [n for n in tree.finished if n.finish == "length"]
    assert len(cut) == 1 and cut[0].depth == 1
    assert len(result.candidates) == 4 and sum(c.finish == "length" for c in result.candidates) == 1


async def test_a_child_dropped_by_the_prm_counts_against_the_width() -> None:
    # Node "2" is too long for the PRM: the engine drops it (pruned, finish="length"); its
    # unit of the width is spent, so later depths sample N - 1 and N - 1 solutions come back.
    script = world(steps=2, text={"2": "n2 " + "y" * 200 + " [p=0.9]\n\n"})
    searcher = searcher_for(script, verifier=ScriptedVerifier(max_input_chars=150))
    result = await searcher.solve("q", REBASE(n=4))
    tree = result.tree
    assert tree is not None
    (dropped,) = [n for n in tree.root.children if n.finish == "length"]
    assert dropped.state == "pruned" and not dropped.children
    assert sampled_per_depth(tree) == [4, 3, 3]
    assert len(result.candidates) == 3
    assert tree.strategy_state[REBASE(n=4)].ended == 4


async def test_max_depth_samples_to_completion() -> None:
    searcher = searcher_for(world(steps=50))  # would take 50 steps
    result = await searcher.solve("q", REBASE(n=4, max_depth=3))
    requests = searcher.policy.requests
    assert requests[0].stop == ("\n\n",)
    tree = result.tree
    assert tree is not None
    # depths 1 and 2 stop at a step; the expansions that reach depth 3 sample to EOS
    depth_of_request = [r for r in requests if r.stop == ()]
    assert sum(r.n for r in depth_of_request) == 4
    assert max(n.depth for n in tree.nodes()) == 3
    assert len(result.candidates) == 4 and all(c.finish == "eos" for c in result.candidates)


def _random_world() -> Callable[[ScriptCall], str]:
    """Scores and early ends drawn from the request's seeded generator."""

    def script(call: ScriptCall) -> str:
        parents = PATH.findall(call.text)
        path = f"{parents[-1]}/{call.index}" if parents else str(call.index)
        p = round(call.rng.random(), 3)
        if call.rng.random() < 0.25 or path.count("/") >= 4 or not call.request.stop:
            return f"n{path} \\boxed{{{call.rng.randint(1, 3)}}} [p={p}]{EOS}"
        return f"n{path} [p={p}]\n\n"

    return script


def _fingerprint(result) -> tuple:
    tree = result.tree
    return (
        tuple((n.text, n.state, n.step_scores) for n in tree.nodes()),
        tuple(c.text for c in result.candidates),
        result.answer,
    )


async def test_reproducible_whatever_order_requests_finish_in() -> None:
    async def run(delay_seed: int, seed: int):
        rng = random.Random(delay_seed)

        async def delay(request) -> None:
            await asyncio.sleep(rng.random() * 0.002)

        searcher = searcher_for(_random_world(), delay=delay, seed=seed)
        return _fingerprint(await searcher.solve("q", REBASE(n=8, temperature=1.0)))

    first = await run(0, seed=1)
    assert await run(1, seed=1) == first
    assert await run(2, seed=1) == first
    assert await run(0, seed=2) != first  # another seed: another search


async def test_budget_invariants_over_random_worlds() -> None:
    for seed in range(15):
        searcher = searcher_for(_random_world(), seed=seed)
        strategy = REBASE(n=8, softmax_temperature=0.3)
        result = await searcher.solve("q", strategy)
        tree = result.tree
        assert tree is not None
        per_depth = sampled_per_depth(tree)
        assert per_depth[0] == 8
        for depth, sampled in enumerate(per_depth[1:], start=1):
            ended_before = sum(1 for n in tree.finished if n.depth <= depth)
            assert sampled == 8 - ended_before  # the width left: N minus every solution so far
        assert len(tree.finished) == len(result.candidates) == 8
        assert not tree.frontier and tree.strategy_state[strategy].ended == 8


async def test_solve_all_keeps_each_problems_state_in_its_tree() -> None:
    # Three problems, each its own scores, searched at once by ONE strategy object; each
    # must match the same problem searched alone.
    def script(call: ScriptCall) -> str:
        shift = {"a": 0.0, "b": 0.3, "c": 0.6}[call.problem]
        parents = PATH.findall(call.text)
        path = f"{parents[-1]}/{call.index}" if parents else str(call.index)
        p = round((hash_path(path) + shift) % 1.0, 3)
        if path.count("/") >= 2 or path in {"1", "2/0"} or not call.request.stop:
            return f"n{path} \\boxed{{{call.problem}}} [p={p}]{EOS}"
        return f"n{path} [p={p}]\n\n"

    strategy = REBASE(n=6, softmax_temperature=0.3)

    async def delay(request) -> None:
        await asyncio.sleep(0.001 * (request.prompt_token_ids[4] % 3))

    together = searcher_for(script, delay=delay, max_concurrent_problems=3)
    results = [r async for r in together.solve_all(["a", "b", "c"], strategy)]
    assert together.policy.max_in_flight > 1  # the problems really ran at once
    by_problem = {r.problem: r for r in results}
    for problem in "abc":
        alone = await searcher_for(script).solve(problem, strategy)
        assert _fingerprint(by_problem[problem]) == _fingerprint(alone)
        assert by_problem[problem].answer == problem
        assert by_problem[problem].tree.strategy_state[strategy].ended == 6
    assert sampled_per_depth(by_problem["a"].tree) != sampled_per_depth(by_problem["c"].tree)


def hash_path(path: str) -> float:
    """A fixed pseudo-random score in [0, 1) per path."""
    return random.Random(path).random()
