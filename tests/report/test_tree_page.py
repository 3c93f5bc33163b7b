"""One recorded search tree as a self-contained HTML page (`tree_page_html`): what it embeds,
the snapshots it refuses, and (in a real headless Chromium) what the viewer draws."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest
from selenium.webdriver.common.by import By

from tests.browser import headless_chromium, script_errors, wait_for
from tests.engine.helpers import make_searcher, stepwise_script
from ttsearch.strategies import BeamSearch
from ttsearch.study.report.tree_page import inline_script, tree_page_html

SCRIPT = stepwise_script(lambda d, i, text: 0.2 + 0.1 * d + 0.05 * i, steps=2)
HOSTILE = "</script><b>bold</b> & \u2028"  # a step text that must stay text


async def recorded_tree() -> dict[str, Any]:
    """A beam search's tree as a run that keeps trees records it: the snapshot, the selected
    candidate's node and the answer; one node's text made hostile."""
    result = await make_searcher(SCRIPT).solve("What is 3 + 4?", BeamSearch(n=4, width=2))
    assert result.tree is not None
    best = max(result.candidates, key=lambda c: c.score)
    tree = {**result.tree.snapshot(), "selected": best.node_id, "answer": result.answer}
    tree["nodes"][1]["text"] = HOSTILE
    return tree


def embedded(page: str) -> Any:
    (data,) = re.findall(r'<script type="application/json" id="tree-data">(.*?)</script>', page, re.S)
    return json.loads(data)


async def test_the_page_embeds_the_tree_and_the_viewer_and_nothing_external() -> None:
    tree = await recorded_tree()
    page = tree_page_html(tree, "beam n=4 <seed 0>, problem 3")
    assert embedded(page) == tree  # the hostile text included, escaped only for the HTML parser
    assert "<title>beam n=4 &lt;seed 0&gt;, problem 3</title>" in page
    assert "<b>bold</b>" not in page and "global.TreeView = " in page and ".tv-node" in page
    assert "src=" not in page and "href=" not in page  # opens from disk, offline


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda t: t.pop("nodes"), "needs 'nodes'"),
        (lambda t: t.update(nodes=[]), "needs 'nodes'"),
        (lambda t: t["nodes"][2].pop("id"), r"nodes\[2\] is not a node"),
        (lambda t: t["nodes"][0].update(parent=3), "the first node must be the root"),
        (lambda t: t["nodes"][2].update(parent=999), "node .*: its parent 999 is not listed before it"),
        (lambda t: t["nodes"].append(dict(t["nodes"][1])), "listed twice"),
        (lambda t: t.update(selected=999), "selected=999 is not a node"),
        (lambda t: t.update(answer={1, 2}), "not JSON data"),
        (lambda t: t["nodes"][1].update(score=float("nan")), "not JSON data"),
    ],
)
async def test_a_snapshot_that_is_not_a_tree_is_refused_by_name(change: Any, words: str) -> None:
    tree = copy.deepcopy(await recorded_tree())
    change(tree)
    with pytest.raises(ValueError, match=words):
        tree_page_html(tree, "t")


def test_a_script_that_would_end_its_element_is_refused() -> None:
    with pytest.raises(ValueError, match="must not contain '</script'"):
        inline_script("let s = '</SCRIPT>';")


@pytest.mark.slow  # starts a browser
async def test_chromium_draws_one_node_per_snapshot_node_and_the_selected_path(tmp_path: Any) -> None:
    tree = await recorded_tree()
    page = tmp_path / "tree.html"
    page.write_text(tree_page_html(tree, "a recorded tree"), encoding="utf-8")
    by_id = {node["id"]: node for node in tree["nodes"]}
    depth = by_id[tree["selected"]]["depth"]
    with headless_chromium() as browser:
        browser.get(page.as_uri())
        nodes = wait_for(
            browser, lambda b: b.find_elements(By.CSS_SELECTOR, "svg.tv-tree .tv-node"), "the tree was not drawn"
        )
        assert len(nodes) == len(tree["nodes"])
        assert {int(n.get_attribute("data-id")) for n in nodes} == set(by_id)
        assert all(n.get_attribute("data-state") == by_id[int(n.get_attribute("data-id"))]["state"] for n in nodes)
        (selected,) = browser.find_elements(By.CSS_SELECTOR, ".tv-node.tv-selected")
        assert int(selected.get_attribute("data-id")) == tree["selected"]
        assert len(browser.find_elements(By.CSS_SELECTOR, ".tv-node.tv-path")) == depth + 1
        assert len(browser.find_elements(By.CSS_SELECTOR, ".tv-edge.tv-path")) == depth
        # Colour by score: two nodes with different scores are filled differently; no score: grey.
        fills = {by_id[int(n.get_attribute("data-id"))]["score"]: n.get_attribute("fill") for n in nodes}
        assert fills[None] == "#c4c4c4" and len(set(fills.values())) > 2
        # Hover text: the node's own step text, the hostile one as text.
        hostile = browser.find_element(By.CSS_SELECTOR, f'.tv-node[data-id="{tree["nodes"][1]["id"]}"] title')
        assert HOSTILE.replace("\u2028", "") in hostile.get_attribute("textContent").replace("\u2028", "")
        assert not browser.find_elements(By.CSS_SELECTOR, "b")  # "<b>" stayed text
        # The selected candidate's solution is shown below the tree; a click shows another node's.
        details = browser.find_element(By.CSS_SELECTOR, ".tv-details")
        assert details.text.startswith("the selected candidate")
        browser.find_element(By.CSS_SELECTOR, f'.tv-node[data-id="{tree["nodes"][1]["id"]}"]').click()
        assert details.text.startswith(f"the solution up to node {tree['nodes'][1]['id']}")
        assert "a recorded tree" in browser.title and not script_errors(browser)
