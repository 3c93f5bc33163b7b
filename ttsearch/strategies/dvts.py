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

from collections.abc import Sequence
from dataclasses import dataclass

from ttsearch.core.tree import Node, SearchTree
from ttsearch.strategies.base import Expand, StepwiseStrategy


@dataclass(frozen=True, kw_only=True)
class DVTS(StepwiseStrategy):
    """N/M independent subtrees of width M, each greedily expanded by the PRM."""

    @property
    def num_subtrees(self) -> int:
        return self.n // self.width

    def start(self, tree: SearchTree) -> Sequence[Expand]:
        return [self.expand(tree.root, self.width, group=g) for g in range(self.num_subtrees)]

    def update(self, tree: SearchTree, expansion: Expand, children: list[Node]) -> Sequence[Expand]:
        best = self.top(children, 1)
        tree.prune([c for c in children if c.state == "open" and c not in best])
        if not best or best[0].is_terminal:
            return ()  # this subtree is done
        return [self.expand(best[0], self.width)]

    def candidates(self, tree: SearchTree) -> list[Node]:
        result: list[Node] = []
        for group in range(self.num_subtrees):
            leaves = [node for node in tree.finished if node.group == group]
            result.extend(self.best_first(leaves)[: self.width])
        return result
