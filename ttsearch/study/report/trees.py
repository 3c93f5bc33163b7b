"""The report's search-tree pages: one page per recorded tree (`execution.keep_trees`),
and the links the report's HTML lists them by, run by run.

The trees are read from each experiment directory's `trees/<run>.jsonl` (the last line of
a problem wins: a problem searched again appended a newer tree), drawn by the live
search view's viewer (`tree_page.tree_page_html`), and written under the report folder
as `trees/<run>/<k>.html`, `k` the problem's position in the run's file (problem ids may
hold characters a file name cannot).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ttsearch.records import read_records
from ttsearch.study.report.tree_page import tree_page_html
from ttsearch.study.store import TREES_DIR

__all__ = ["TreeLink", "write_tree_pages"]


@dataclass(frozen=True, slots=True)
class TreeLink:
    """One problem's tree page, as the report lists it."""

    run_id: str
    unique_id: str
    answer: str | None
    correct: bool | None
    href: str  # relative to the report folder


def write_tree_pages(dirs: Sequence[Path], out: Path) -> dict[str, list[TreeLink]]:
    """Write a page per recorded tree of the experiment `dirs` under `out/trees/`; returns the
    links by run (runs without trees left out)."""
    links: dict[str, list[TreeLink]] = {}
    for directory in dirs:
        for path in sorted((Path(directory) / TREES_DIR).glob("*.jsonl")):
            run_id = path.stem
            latest = {str(line["unique_id"]): line for line in read_records(path)}
            folder = out / TREES_DIR / run_id
            folder.mkdir(parents=True, exist_ok=True)
            for k, (unique_id, line) in enumerate(latest.items()):
                tree = {**line["tree"], "selected": line.get("selected"), "answer": line.get("answer")}
                page = folder / f"{k}.html"
                _write(page, tree_page_html(tree, f"{run_id}: {unique_id}"))
                links.setdefault(run_id, []).append(
                    TreeLink(
                        run_id, unique_id, line.get("answer"), line.get("correct"), page.relative_to(out).as_posix()
                    )
                )
    return links


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
