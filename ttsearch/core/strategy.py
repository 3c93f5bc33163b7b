"""The strategy interface the search core drives: a frontier-selection policy with no I/O.

The core owns the one search loop (`ttsearch.core.search`). A strategy only decides:
`start(tree)` returns the first expansions; `update(tree, expansion, children)` is called
each time one expansion has been generated and scored, and returns the next expansions
(and prunes what it drops); `candidates(tree)` picks the final solutions once nothing is
in flight. Per-problem state lives in the tree (frontier, finished, node groups), so one
strategy object serves every problem, concurrently.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from ttsearch.core.tree import Node, SearchTree
from ttsearch.evaluation.aggregation import Reduction, reduce_scores
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
    # > 0: the children are new attempts (sequential revisions), prompted with the problem
    # and the last `revise` attempts of `node`'s chain (`Node.attempts`, `node`'s own last)
    # in the policy's revision format; their solutions start afresh.
    revise: int = 0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"Expand.n must be >= 1, got {self.n}")
        if self.lookahead < 0:
            raise ValueError(f"Expand.lookahead must be >= 0, got {self.lookahead}")
        if self.revise < 0:
            raise ValueError(f"Expand.revise must be >= 0, got {self.revise}")
        if self.revise and self.lookahead:
            raise ValueError("Expand.revise and Expand.lookahead cannot be combined")


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
    # True for strategies that start new attempts from earlier ones (`Expand.revise`): the
    # policy must render revision prompts (`core.backend.RevisionPolicy`).
    needs_revision_prompts: ClassVar[bool] = False
    # How results report the budget N: "sampling" (N independent samples, so every k <= N
    # can be read from one run) or "stepwise" (the candidates of one search at N only).
    budget_kind: ClassVar[Literal["sampling", "stepwise"]] = "stepwise"

    @property
    def name(self) -> str:
        return type(self).__name__

    @classmethod
    def budget_unit(cls, options: Mapping[str, Any]) -> int:
        """The step N moves in for this strategy with `options` (its recorded config): N
        must be a multiple of it (beam search: the width). A delegating strategy (the
        compute-optimal one) spends the budget it has left in whole units."""
        return 1

    def requires_revision_prompts(self) -> bool:
        """Whether this search may prompt attempts with earlier ones (`Expand.revise`): the
        class's `needs_revision_prompts`; a strategy that delegates asks what it may run."""
        return self.needs_revision_prompts

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

    def options(self) -> dict[str, Any]:
        """The strategy's options as results record them ("config"): a dataclass's fields
        (nested dataclasses as dicts), else nothing. Override when a field should be
        recorded otherwise (e.g. a table by its file name)."""
        if not dataclasses.is_dataclass(self):
            return {}
        return dataclasses.asdict(self)

    @property
    def live_prefixes(self) -> int:
        """Distinct prefixes one problem keeps in the KV cache at a time (the searcher's
        admission estimate): N for sampling; stepwise strategies override it."""
        return self.n

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
