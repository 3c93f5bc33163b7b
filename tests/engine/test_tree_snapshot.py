"""What a viewer of a search reads: `SearchTree.snapshot` (JSON-ready nodes), the tree's
`version` (bumped on every visible change), and `Searcher.solve(watch=)` (the live tree)."""

from __future__ import annotations

import json

import pytest

from tests.engine.helpers import make_searcher, stepwise_script
from ttsearch.core.tree import Node, SearchTree
from ttsearch.strategies import BeamSearch, BestOfN

# Step d of sample i scores 0.1 * (d + 1) + 0.01 * i: every node's score is known.
SCRIPT = stepwise_script(lambda d, i, text: 0.1 * (d + 1) + 0.01 * i, steps=2)


def test_a_snapshot_lists_every_node_parent_first_with_its_own_segment() -> None:
    tree = SearchTree("What is 1 + 1?", [1, 2, 3])
    a = tree.add_child(
        tree.root, token_ids=(4, 5), text="one\n\n", steps=("one",), step_scores=(0.4,), finish="step", terminal=False
    )
    b = tree.add_child(
        tree.root, token_ids=(6,), text="two", steps=("two",), step_scores=(0.9,), finish="eos", terminal=True
    )
    c = tree.add_child(
        a, token_ids=(7,), text="three", steps=("one", "three"), step_scores=(0.4, 0.2), finish="eos", terminal=True
    )
    snapshot = tree.snapshot()
    assert snapshot["problem"] == "What is 1 + 1?" and snapshot["version"] == tree.version
    root, *rest = snapshot["nodes"]
    assert root == {
        "id": 0,
        "parent": None,
        "depth": 0,
        "text": "",
        "tokens": 0,  # the prompt's tokens are not generated ones
        "steps": 0,
        "score": None,
        "state": "expanded",
        "finish": None,
    }
    # Depth-first: a's child c comes before a's sibling b.
    assert [(n["id"], n["parent"], n["depth"]) for n in rest] == [(a.id, 0, 1), (c.id, a.id, 2), (b.id, 0, 1)]
    first, third, second = rest
    assert (first["text"], first["tokens"], first["steps"], first["score"]) == ("one\n\n", 2, 1, 0.4)
    assert (third["text"], third["steps"], third["score"], third["state"], third["finish"]) == (
        "three",
        2,
        0.2,  # the last step's score, not a reduction
        "finished",
        "eos",
    )
    assert (second["state"], second["finish"]) == ("finished", "eos") and first["state"] == "open"
    assert json.loads(json.dumps(snapshot)) == snapshot  # JSON-ready as it is


def test_every_visible_change_bumps_the_version() -> None:
    tree = SearchTree("p", [1])
    seen = [tree.version]

    def child(terminal: bool = False) -> Node:
        node = tree.add_child(
            tree.root, token_ids=(2,), text="x", steps=("x",), step_scores=(0.5,), finish="step", terminal=terminal
        )
        seen.append(tree.version)
        return node

    opened, pruned, finished = child(), child(), child()
    child(terminal=True)
    tree.mark_expanded(opened)
    seen.append(tree.version)
    tree.prune(pruned)
    seen.append(tree.version)
    tree.finish_open(finished)
    seen.append(tree.version)
    assert seen == sorted(set(seen)) and len(seen) == 8  # strictly increasing: every step moved it
    before = tree.version
    tree.snapshot()
    len(tree)
    assert tree.version == before  # reading does not


async def test_watch_sees_the_tree_before_the_first_request_and_as_it_grows() -> None:
    searcher = make_searcher(SCRIPT, keep_trees=False)
    watched: list[tuple[SearchTree, int, int]] = []

    def watch(tree: SearchTree) -> None:
        watched.append((tree, len(tree), len(searcher.policy.requests)))

    result = await searcher.solve("p", BeamSearch(n=4, width=2), watch=watch)
    ((tree, size_then, requests_then),) = watched
    assert (size_then, requests_then) == (1, 0)  # only the root, nothing sent yet
    assert result.tree is None  # the result drops it; the watcher still has it
    snapshot = tree.snapshot()
    by_id = {node["id"]: node for node in snapshot["nodes"]}
    assert len(by_id) == len(tree) > 1
    assert {c.node_id for c in result.candidates} <= {i for i, n in by_id.items() if n["state"] == "finished"}
    assert {n["state"] for n in by_id.values()} >= {"expanded", "finished"}
    # Every non-root node's parent is listed before it, one depth up.
    order = {node["id"]: k for k, node in enumerate(snapshot["nodes"])}
    for node in snapshot["nodes"][1:]:
        parent = by_id[node["parent"]]
        assert order[parent["id"]] < order[node["id"]] and parent["depth"] == node["depth"] - 1
    # A scored step's node carries that step's score (d0 of sample i: 0.1 + 0.01 i).
    assert all(0.1 <= n["score"] < 0.2 for n in by_id.values() if n["depth"] == 1)


async def test_without_watch_a_search_runs_as_before() -> None:
    searcher = make_searcher(SCRIPT)
    watched = await searcher.solve("p", BestOfN(n=3), seed=1, watch=None)
    plain = await make_searcher(SCRIPT).solve("p", BestOfN(n=3), seed=1)
    assert [c.text for c in watched.candidates] == [c.text for c in plain.candidates]


async def test_a_watch_that_raises_fails_the_solve_before_any_request() -> None:
    searcher = make_searcher(SCRIPT)

    def broken(tree: SearchTree) -> None:
        raise RuntimeError("viewer broke")

    with pytest.raises(RuntimeError, match="viewer broke"):
        await searcher.solve("p", BestOfN(n=2), watch=broken)
    assert searcher.policy.requests == []
