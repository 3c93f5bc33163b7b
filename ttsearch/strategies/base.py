"""The strategy interface: a frontier-selection policy with no I/O.

The engine owns the one search loop (`ttsearch.engine.search`). A strategy only decides:
`start(tree)` returns the first expansions; `update(tree, expansion, children)` is called
each time one expansion has been generated and scored, and returns the next expansions
(and prunes what it drops); `candidates(tree)` picks the final solutions once nothing is
in flight. Per-problem state lives in the tree (frontier, finished, node groups), so one
strategy object serves every problem, concurrently.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Hashable, Sequence

from ttsearch.engine.tree import Node, SearchTree
from ttsearch.evaluation.aggregation import REDUCTIONS, SELECTION_METHODS, Reduction, reduce_scores
from ttsearch.evaluation.aggregation import SelectionMethod as Selection


@dataclass(frozen=True, slots=True)
class Expand:
    """Ask the engine to sample `n` continuations of `node` and score them."""

    node: Node
    n: int
    temperature: float
    top_p: float = 1.0
    to_completion: bool = False  # sample to EOS instead of stopping after one step
    lookahead: int = 0  # rank each child by the score after this many greedy (T=0) steps
    group: Hashable = None  # children's group (None: inherit the parent's)

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"Expand.n must be >= 1, got {self.n}")
        if self.lookahead < 0:
            raise ValueError(f"Expand.lookahead must be >= 0, got {self.lookahead}")


class Strategy(ABC):
    """Base class of search strategies. Subclasses are usually frozen dataclasses.

    Required attributes: `n` (how many candidates the search should return), `reduction`
    (how a candidate's step scores reduce to one reward) and `selection` (how the final
    answer is picked from the candidates). Set `needs_verifier = False` for strategies that
    never look at scores: the engine then skips the verifier entirely.
    """

    n: int
    reduction: Reduction
    selection: Selection
    needs_verifier: ClassVar[bool] = True

    @property
    def name(self) -> str:
        return type(self).__name__

    @abstractmethod
    def start(self, tree: SearchTree) -> Sequence[Expand]:
        """First expansions (usually of `tree.root`)."""

    def update(self, tree: SearchTree, expansion: Expand, children: list[Node]) -> Sequence[Expand]:
        """Next expansions after `expansion` produced the scored `children`. Default: none."""
        return ()

    def candidates(self, tree: SearchTree) -> list[Node]:
        """Final solutions, once the search has stopped. Default: every finished node, in
        tree order (for one expansion: sample order)."""
        return sorted(tree.finished, key=lambda node: node.address)

    def resolved(self, tree: SearchTree) -> Strategy:
        """The strategy whose scores and selection give this problem's result.

        Itself, except for a strategy that hands a problem to another one (e.g.
        `ComputeOptimal` runs the option its policy table picks for the problem).
        """
        return self

    def score(self, node: Node) -> float:
        """The reward of a node's solution so far: its step scores reduced.

        A node without any scored step (e.g. the model emitted an empty step) gets 0.0, so
        it ranks last.
        """
        return reduce_scores(node.step_scores, self.reduction) if node.step_scores else 0.0

    @property
    def generation_budget(self) -> int:
        """Samples per round as the paper (arXiv 2408.03314) counts budgets: N here."""
        return self.n

    def rank_score(self, node: Node) -> float:
        """What selection ranks by: the reduction over the node's step scores, and over its
        lookahead rollout's scores when it has some. A child that added no step (its text
        was only whitespace) ranks last instead of inheriting its parent's scores."""
        if not node.adds_step:
            return -math.inf
        if node.lookahead_scores:
            return reduce_scores(node.step_scores + node.lookahead_scores, self.reduction)
        return self.score(node)

    def top(self, nodes: Sequence[Node], k: int) -> list[Node]:
        """The k best nodes by `rank_score`.

        Ties (duplicate steps are common) go to the node earlier in the tree (by
        `Node.address`), never to the one whose request happened to finish first, so
        results do not depend on timing.
        """
        return sorted(nodes, key=lambda node: (-self.rank_score(node), node.address))[:k]

    def best_first(self, nodes: Sequence[Node]) -> list[Node]:
        """Nodes by `score` (the final reward), best first; ties by tree position."""
        return sorted(nodes, key=lambda node: (-self.score(node), node.address))


@dataclass(frozen=True, kw_only=True)
class SampledStrategy(Strategy):
    """Configuration shared by the built-in strategies: N candidates sampled at a temperature."""

    n: int
    temperature: float = 0.8
    top_p: float = 1.0
    reduction: Reduction = "last"
    selection: Selection = "weighted"

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {self.reduction!r}")
        if self.selection not in SELECTION_METHODS:
            raise ValueError(f"selection must be one of {SELECTION_METHODS}, got {self.selection!r}")


@dataclass(frozen=True, kw_only=True)
class StepwiseStrategy(SampledStrategy):
    """Shared configuration of strategies that grow solutions one step at a time.

    `width` is the beam width M (N must be a multiple of it); the expansion that would
    reach `max_depth` samples to EOS instead of stopping after one step.
    """

    width: int = 4
    max_depth: int = 40

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.width < 1 or self.n % self.width:
            raise ValueError(f"{self.name}: width must be >= 1 and divide n, got n={self.n}, width={self.width}")
        if self.max_depth < 1:
            raise ValueError(f"{self.name}: max_depth must be >= 1, got {self.max_depth}")

    def expand(self, node: Node, n: int, *, lookahead: int = 0, group: Hashable = None) -> Expand:
        return Expand(
            node,
            n=n,
            temperature=self.temperature,
            top_p=self.top_p,
            to_completion=node.depth + 1 >= self.max_depth,
            lookahead=lookahead,
            group=group,
        )
