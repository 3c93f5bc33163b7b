"""Diverse Verifier Tree Search (HF blog): N/M independent greedy subtrees.

Each subtree starts from its own M samples of the first step. It keeps the single
best-scoring child, expands it M times, keeps the best again, and so on until the best
child is finished (EOS or a length limit) or `max_depth` is reached (that round samples
to EOS). Subtrees never exchange candidates and advance independently: the engine calls
`update` per expansion, so one subtree never waits for another.

The result is every subtree's finished leaves (the best M per subtree, so at most N in
all) — never an unfinished one (search-and-learn's issue #57).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ttsearch.engine.tree import Node, SearchTree
from ttsearch.strategies.base import Expand, Reduction, Selection, Strategy, check_common


@dataclass(frozen=True, kw_only=True)
class DVTS(Strategy):
    """N/M independent subtrees of width M, each greedily expanded by the PRM."""

    n: int
    width: int = 4
    max_depth: int = 40
    temperature: float = 0.8
    top_p: float = 1.0
    reduction: Reduction = "last"
    selection: Selection = "weighted"

    def __post_init__(self) -> None:
        check_common(self.n, self.temperature, self.top_p, self.reduction, self.selection)
        if self.width < 1 or self.n % self.width:
            raise ValueError(f"DVTS width must be >= 1 and divide n: n={self.n}, width={self.width}")
        if self.max_depth < 1:
            raise ValueError(f"max_depth must be >= 1, got {self.max_depth}")

    @property
    def num_subtrees(self) -> int:
        return self.n // self.width

    def _expand(self, node: Node, group: int | None = None) -> Expand:
        return Expand(
            node,
            n=self.width,
            temperature=self.temperature,
            top_p=self.top_p,
            to_completion=node.depth + 1 >= self.max_depth,
            group=group,
        )

    def start(self, tree: SearchTree) -> Sequence[Expand]:
        return [self._expand(tree.root, group=g) for g in range(self.num_subtrees)]

    def update(self, tree: SearchTree, expansion: Expand, children: list[Node]) -> Sequence[Expand]:
        best = self.top(children, 1)
        tree.prune([c for c in children if c.state == "open" and c not in best])
        if not best or best[0].is_terminal:
            return ()  # this subtree is done
        return [self._expand(best[0])]

    def candidates(self, tree: SearchTree) -> list[Node]:
        result: list[Node] = []
        for group in range(self.num_subtrees):
            leaves = [node for node in tree.finished if node.group == group]
            result.extend(sorted(leaves, key=lambda b: -self.score(b))[: self.width])
        return result
