"""REBASE, reward-balanced search (Wu et al., arXiv 2408.00724; the authors' `rebase.py`).

A tree searched depth by depth with a width of N: depth 1 samples N first steps. After
each depth (all of this problem's expansions scored), every child that ended there
(EOS, a length limit, or dropped as too long for the PRM) takes one unit off the width;
the width left is split over the open children in proportion to softmax(score / T):
sorted best first, each takes ceil(left x its weight / the weights not yet served), so a
good node gets more children, a weak one usually still gets one, and the split sums to
exactly the width left. A node allocated nothing is pruned. The search stops when the
width is spent or no open node is left; the depth that reaches `max_depth` samples to
EOS, so every one of the N units ends as a solution (or a dropped one). The answer is a
weighted vote over the finished solutions.

N is the number of solutions and the samples per depth (at depth d, N minus those that
ended before it): the same count as beam search's N, so `generation_budget` is N.

Where this differs from the reference, and why: docs/methods/rebase.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import ClassVar, Literal

from ttsearch.core.tree import Node, SearchTree
from ttsearch.strategies.base import DepthLimitedStrategy, Expand

__all__ = ["REBASE", "balance"]


def balance(scores: Sequence[float | None], width: int, temperature: float) -> list[int]:
    """REBASE's allocation: how many children each node gets out of `width`.

    Nodes are served best score first (ties: the earlier in `scores`); each takes
    ceil(left x w / rest), where w = exp((score - best) / temperature) and `rest` is the
    sum of the weights not yet served, then `left` and `rest` shrink by what it took. The
    arithmetic is exact (rationals of the float weights), so the counts sum to exactly
    `width`, and equal scores get equal shares up to the ceiling's order.

    A score that is None or not finite (NaN: the PRM said nothing usable) weighs 0, so it
    gets no child; when no score is usable every node weighs the same (a uniform split).
    Returns counts in the order of `scores`.
    """
    if width < 0:
        raise ValueError(f"width must be >= 0, got {width}")
    if not temperature > 0 or not math.isfinite(temperature):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
    usable = [s if s is not None and math.isfinite(s) else None for s in scores]
    valid = [s for s in usable if s is not None]
    if valid:
        best = max(valid)
        # exp of a number <= 0: never overflows (the max is subtracted), may underflow to 0
        weights = [Fraction(0) if s is None else Fraction(math.exp((s - best) / temperature)) for s in usable]
    else:
        weights = [Fraction(1)] * len(usable)
    order = sorted(range(len(usable)), key=lambda i: (usable[i] is None, -(usable[i] or 0.0), i))
    counts = [0] * len(usable)
    left, rest = width, sum(weights, Fraction(0))
    for i in order:
        if left == 0 or rest == 0:
            break
        take = math.ceil(left * weights[i] / rest)  # <= left: weights[i] <= rest
        counts[i] = take
        left -= take
        rest -= weights[i]
    return counts


@dataclass
class _State:
    """One problem's REBASE state (in `tree.strategy_state`)."""

    ended: int = 0  # units of the width spent: children that finished or were dropped


@dataclass(frozen=True, kw_only=True)
class REBASE(DepthLimitedStrategy):
    """Reward-balanced search: a width of N per depth, split by softmax(score / T)."""

    budget_kind: ClassVar[Literal["sampling", "stepwise"]] = "stepwise"

    softmax_temperature: float = 0.2  # T of the balance (the reference's default); `temperature` samples

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.softmax_temperature > 0 or not math.isfinite(self.softmax_temperature):
            raise ValueError(
                f"{self.name}: softmax_temperature must be a finite number > 0, got {self.softmax_temperature}"
            )

    @property
    def generation_budget(self) -> int:
        """N samples per depth at most (beam search's count): depth 1 samples N, a later
        depth N minus the solutions that ended before it."""
        return self.n

    @property
    def live_prefixes(self) -> int:
        """Up to N distinct nodes can be expanded at one depth (each allocated one child)."""
        return self.n

    def weight(self, node: Node) -> float | None:
        """The score the balance uses: the node's step scores reduced (`last`: the newest
        step's, the reference's); None when it has none usable (it added no step, or the
        PRM gave a score outside [0, 1] such as NaN)."""
        if not node.adds_step or not all(0.0 <= s <= 1.0 for s in node.step_scores):
            return None
        return self.score(node)

    def start(self, tree: SearchTree) -> Sequence[Expand]:
        tree.strategy_state[self] = _State()
        return [self.expand(tree.root, self.n)]

    def update(self, tree: SearchTree, expansion: Expand, children: list[Node]) -> Sequence[Expand]:
        state: _State = tree.strategy_state[self]
        # Children the engine dropped (too long for the PRM) are not returned: they end too.
        state.ended += expansion.n - len(children) + sum(child.is_terminal for child in children)
        if tree.in_flight:  # a depth ends when all of its expansions are scored
            return ()
        nodes = sorted(tree.frontier, key=lambda node: node.address)
        left = self.n - state.ended
        if left <= 0 or not nodes:
            tree.prune(nodes)
            return ()
        counts = balance([self.weight(node) for node in nodes], left, self.softmax_temperature)
        tree.prune([node for node, k in zip(nodes, counts, strict=True) if k == 0])
        return [self.expand(node, k) for node, k in zip(nodes, counts, strict=True) if k > 0]

    def candidates(self, tree: SearchTree) -> list[Node]:
        """Every finished solution (never more than N), best first."""
        return self.best_first(tree.finished)
