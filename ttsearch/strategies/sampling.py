"""Parallel sampling strategies: N independent full solutions, then pick an answer.

Majority voting needs no verifier. Best-of-N scores every step of every solution with the
PRM; vanilla ("naive") takes the best-rewarded candidate, weighted sums rewards per
canonical answer. Both share one search: sample N complete solutions from the root.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from ttsearch.core.tree import SearchTree
from ttsearch.strategies.base import Expand, SampledStrategy, Selection


@dataclass(frozen=True, kw_only=True)
class _Sampling(SampledStrategy):
    def start(self, tree: SearchTree) -> Sequence[Expand]:
        return [Expand(tree.root, n=self.n, temperature=self.temperature, top_p=self.top_p, to_completion=True)]


@dataclass(frozen=True, kw_only=True)
class MajorityVoting(_Sampling):
    """Self-consistency: N samples, the most frequent canonical answer. No verifier calls."""

    selection: Selection = "majority"
    needs_verifier: ClassVar[bool] = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.selection != "majority":
            raise ValueError("MajorityVoting has no scores: selection must be 'majority' (use BestOfN)")


@dataclass(frozen=True, kw_only=True)
class BestOfN(_Sampling):
    """N samples scored by the PRM; selection 'weighted' (default) or 'naive' (vanilla)."""

    selection: Selection = "weighted"
