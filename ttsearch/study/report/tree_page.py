"""One recorded search tree as a self-contained HTML page: the tree viewer's script and
styles inlined (`ttsearch/assets/tree_view/`), the tree's snapshot embedded as JSON, so the
page opens from disk with no server and no network.

The viewer is the live search view's (`ttsearch serve`, GET /): the experiment report links
each problem of a run that kept its trees to such a page.
"""

from __future__ import annotations

import functools
import html
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["TREE_VIEW_DIR", "inline_script", "tree_page_html", "tree_view_script", "tree_view_style"]

TREE_VIEW_DIR = Path(__file__).resolve().parents[2] / "assets" / "tree_view"

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 90em; padding: 0 1em; color: #222; }}
.problem {{ white-space: pre-wrap; background: #f7f7f7; border: 1px solid #e3e3e3; padding: 0.5em; }}
{style}
</style></head><body>
<h1>{title}</h1>
<pre class="problem">{problem}</pre>
<div id="tree"></div>
<script type="application/json" id="tree-data">{data}</script>
{script}
<script>
TreeView.render(document.getElementById("tree"), JSON.parse(document.getElementById("tree-data").textContent));
</script>
</body></html>
"""


@functools.cache
def tree_view_script() -> str:
    """The viewer's JavaScript (defines `window.TreeView`)."""
    return (TREE_VIEW_DIR / "tree_view.js").read_text(encoding="utf-8")


@functools.cache
def tree_view_style() -> str:
    """The viewer's CSS."""
    return (TREE_VIEW_DIR / "tree_view.css").read_text(encoding="utf-8")


def inline_script(source: str) -> str:
    """`source` in a <script> element; refused if it would end the element early."""
    if "</script" in source.lower():
        raise ValueError("a script inlined in a page must not contain '</script'")
    return f"<script>\n{source}\n</script>"


def tree_page_html(tree: Mapping[str, Any], title: str) -> str:
    """The page drawing `tree`: `SearchTree.snapshot()`'s shape (`nodes`, each with `id` and
    `parent`, a parent listed before its children; optionally `problem`), plus optionally
    `selected` (the node id of the selected candidate, drawn with its path) and `answer`.

    :raises ValueError: `tree` is not such a snapshot (the message names the node), or not
        JSON data.
    """
    _check_snapshot(tree)
    try:
        data = json.dumps(tree, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as error:
        raise ValueError(f"the tree is not JSON data: {error}") from None
    # Inside <script> only "</script" would end the element; escaping every "<" (and, for
    # old parsers, U+2028/2029) keeps any step text, e.g. "</script>", inert.
    data = data.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    problem = tree.get("problem")
    return _PAGE.format(
        title=html.escape(title),
        problem=html.escape(problem if isinstance(problem, str) else ""),
        style=tree_view_style(),
        data=data,
        script=inline_script(tree_view_script()),
    )


def _check_snapshot(tree: Mapping[str, Any]) -> None:
    if not isinstance(tree, Mapping):
        raise ValueError(f"a tree snapshot is a mapping with 'nodes', got {type(tree).__name__}")
    nodes = tree.get("nodes")
    if not isinstance(nodes, list) or not nodes:
        raise ValueError("a tree snapshot needs 'nodes': a non-empty list (SearchTree.snapshot())")
    seen: set[int] = set()
    for position, node in enumerate(nodes):
        if not isinstance(node, Mapping) or not isinstance(node.get("id"), int):
            raise ValueError(f"nodes[{position}] is not a node: it needs an integer 'id'")
        node_id, parent = node["id"], node.get("parent")
        if node_id in seen:
            raise ValueError(f"node {node_id} is listed twice")
        if position == 0 and parent is not None:
            raise ValueError(f"the first node must be the root (parent null); node {node_id} has parent {parent!r}")
        if position > 0 and parent not in seen:
            raise ValueError(f"node {node_id}: its parent {parent!r} is not listed before it")
        seen.add(node_id)
    selected = tree.get("selected")
    if selected is not None and selected not in seen:
        raise ValueError(f"selected={selected!r} is not a node of the tree")
