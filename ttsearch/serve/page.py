"""The live search view's page (`GET /`): one HTML document with its script and styles
inlined (`ttsearch/assets/live_view/` and the tree viewer the experiment report's tree pages
use), so the server needs no static route and the page no build step."""

from __future__ import annotations

import functools
from pathlib import Path

from ttsearch.study.report.tree_page import inline_script, tree_view_script, tree_view_style

__all__ = ["LIVE_VIEW_DIR", "live_view_html"]

LIVE_VIEW_DIR = Path(__file__).resolve().parents[1] / "assets" / "live_view"


@functools.cache
def live_view_html() -> str:
    """The page (read once: the assets are part of the installed package)."""
    page = (LIVE_VIEW_DIR / "index.html").read_text(encoding="utf-8")
    parts = {
        "<!-- tree_view.css -->": f"<style>\n{tree_view_style()}\n</style>",
        "<!-- tree_view.js -->": inline_script(tree_view_script()),
        "<!-- live_view.js -->": inline_script((LIVE_VIEW_DIR / "live_view.js").read_text(encoding="utf-8")),
    }
    for marker, content in parts.items():
        if page.count(marker) != 1:
            raise RuntimeError(f"{LIVE_VIEW_DIR / 'index.html'} must contain {marker} once")
        page = page.replace(marker, content)
    return page
