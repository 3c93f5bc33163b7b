"""The search trees the live view shows: each request's tree while it searches, and the last
`keep` finished ones.

A request's `TreeRecord` is opened when the request is accepted, under its response's id
(the hex after `chatcmpl-` / `cmpl-`); the service hands it the `SearchTree` as soon as the
search builds one (`Searcher.solve(watch=)`), so a viewer polling `snapshot()` sees the tree
grow. When the search ends (answered, failed or cancelled) the record freezes the tree's
snapshot as JSON text (a few times smaller than the nodes as dicts, and served as it is),
lets the tree go (its token ids are the bulk of it) and moves to the finished ones, of
which the registry keeps the newest `keep`: a bounded memory whatever the traffic.
Nothing is written to disk.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from typing import Any, Literal

from ttsearch.core.tree import SearchTree

__all__ = ["TreeRecord", "TreeRegistry", "TreeStatus", "tree_id"]

# queued: waiting for a search slot; searching: the tree grows; then one of the three ends.
TreeStatus = Literal["queued", "searching", "finished", "failed", "cancelled"]
_ENDS: frozenset[TreeStatus] = frozenset({"finished", "failed", "cancelled"})
_RESPONSE_PREFIXES = ("chatcmpl-", "cmpl-")  # a response id is one of these + the tree's id


def tree_id(response_id: str) -> str:
    """The tree id a response id (`chatcmpl-<hex>`, `cmpl-<hex>`) or a bare id names."""
    for prefix in _RESPONSE_PREFIXES:
        if response_id.startswith(prefix):
            return response_id.removeprefix(prefix)
    return response_id


class TreeRecord:
    """One request's search tree and how its search ended."""

    def __init__(self, id: str, *, model: str, problem: str) -> None:
        self.id = id
        self.model = model
        self.problem = problem
        self.created = time.time()
        self.status: TreeStatus = "queued"
        self.answer: str | None = None
        self.selected: int | None = None  # the node id of the candidate the response shows
        self.error: str | None = None
        self._tree: SearchTree | None = None  # while it searches
        self._final: str | None = None  # the snapshot as JSON, frozen when the search ended
        self._changes = 0  # status changes, for `version`

    @property
    def ended(self) -> bool:
        return self.status in _ENDS

    @property
    def version(self) -> tuple[int, int]:
        """Differs whenever `snapshot()` would: the status changed or the tree moved."""
        return self._changes, -1 if self._tree is None else self._tree.version

    def watch(self, tree: SearchTree) -> None:
        """The search's tree, as soon as it is built (`Searcher.solve(watch=)`)."""
        if self.ended:
            raise RuntimeError(f"search tree {self.id} already ended ({self.status})")
        self._tree = tree
        self._set_status("searching")

    def end(
        self,
        status: TreeStatus,
        *,
        answer: str | None = None,
        selected: int | None = None,
        error: str | None = None,
    ) -> None:
        """Freeze the tree as it is now (a cancelled or failed search's partial tree)."""
        if status not in _ENDS:
            raise ValueError(f"a search tree ends as one of {sorted(_ENDS)}, not {status!r}")
        if self.ended:
            raise RuntimeError(f"search tree {self.id} already ended ({self.status})")
        self.answer, self.selected, self.error = answer, selected, error
        self._set_status(status)
        self._final = _encode(self._snapshot())
        self._tree = None

    def snapshot(self) -> dict[str, Any]:
        """What the live view draws: the request's facts and every node of its tree
        (`SearchTree.snapshot`'s nodes; none while queued)."""
        return json.loads(self._final) if self._final is not None else self._snapshot()

    def snapshot_json(self) -> str:
        """`snapshot()` as JSON text (an ended tree's without encoding it again)."""
        return self._final if self._final is not None else _encode(self._snapshot())

    def _snapshot(self) -> dict[str, Any]:
        nodes = [] if self._tree is None else self._tree.snapshot()["nodes"]
        return {
            "id": self.id,
            "object": "search.tree",
            "created": int(self.created),
            "model": self.model,
            "status": self.status,
            "problem": self.problem,
            "answer": self.answer,
            "selected": self.selected,
            "error": self.error,
            "nodes": nodes,
        }

    def _set_status(self, status: TreeStatus) -> None:
        self.status = status
        self._changes += 1


def _encode(snapshot: dict[str, Any]) -> str:
    return json.dumps(snapshot, separators=(",", ":"))


class TreeRegistry:
    """Every running request's tree, and the newest `keep` finished ones (0: none)."""

    def __init__(self, keep: int) -> None:
        if keep < 0:
            raise ValueError(f"keep_trees must be >= 0, got {keep}")
        self.keep = keep
        self._live: dict[str, TreeRecord] = {}
        self._finished: OrderedDict[str, TreeRecord] = OrderedDict()  # oldest first

    @property
    def live(self) -> int:
        return len(self._live)

    @property
    def kept(self) -> int:
        return len(self._finished)

    def open(self, id: str, *, model: str, problem: str) -> TreeRecord:
        """A new request's record, under its tree id (a response id is accepted too)."""
        key = tree_id(id)
        if key in self._live or key in self._finished:
            raise ValueError(f"search tree {key} exists already")
        record = TreeRecord(key, model=model, problem=problem)
        self._live[key] = record
        return record

    def get(self, id: str) -> TreeRecord | None:
        """The record under a tree id or response id; None if unknown or dropped."""
        key = tree_id(id)
        return self._live.get(key) or self._finished.get(key)

    def retire(self, record: TreeRecord) -> None:
        """Move an ended record to the finished ones; drop the oldest past `keep`."""
        if not record.ended:
            raise ValueError(f"search tree {record.id} is still {record.status}")
        if self._live.pop(record.id, None) is None:
            return  # not this registry's, or retired already
        if self.keep:
            self._finished[record.id] = record
            while len(self._finished) > self.keep:
                self._finished.popitem(last=False)
