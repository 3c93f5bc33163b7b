"""PRM beam search (HF blog / search-and-learn), and lookahead search (arXiv 2408.03314).

Round 0 samples N first steps from the problem. After each round (all of this problem's
expansions scored) the strategy keeps the top N/M open beams by PRM score, prunes the rest
and expands the kept ones into N new steps in total (M each; when fewer than N/M beams are
left, the N samples are spread over those that remain, as search-and-learn does). Beams
that finish (EOS, or a length limit) leave the frontier; the search stops as soon as N
candidates have finished, and returns the N best of them — never more (search-and-learn's
issue #42). The round that reaches `max_depth` samples to EOS, so every beam ends.

Lookahead search ranks each candidate step by the PRM score at the end of a k-step greedy
rollout from it, keeping only the step itself; k = 0 is beam search.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ttsearch.core.tree import Node, SearchTree
from ttsearch.strategies.base import Expand, StepwiseStrategy


@dataclass(frozen=True, kw_only=True)
class BeamSearch(StepwiseStrategy):
    """N beams, beam width M: keep the top N/M each round and expand each M times."""

    lookahead: int = 0
    dedupe: bool = False  # drop open beams whose text duplicates a better one (search-and-learn's filter_duplicates)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lookahead < 0:
            raise ValueError(f"lookahead must be >= 0, got {self.lookahead}")

    @property
    def generation_budget(self) -> int:
        """N(k+1): each round samples N steps and rolls each out k greedy steps (the paper's
        accounting for lookahead search; N for plain beam search)."""
        return self.n * (self.lookahead + 1)

    @property
    def num_kept(self) -> int:
        return self.n // self.width

    def start(self, tree: SearchTree) -> Sequence[Expand]:
        return [self.expand(tree.root, self.n, lookahead=self.lookahead)]

    def update(self, tree: SearchTree, expansion: Expand, children: list[Node]) -> Sequence[Expand]:
        if tree.in_flight:  # a round ends when all of its expansions are scored
            return ()
        open_beams = tree.frontier
        if len(tree.finished) >= self.n or not open_beams:
            tree.prune(open_beams)
            return ()
        if self.dedupe:
            open_beams = self._dedupe(tree, open_beams)
        kept = self.top(open_beams, self.num_kept)
        kept_set = set(kept)
        tree.prune([b for b in open_beams if b not in kept_set])
        # Spread N samples over the kept beams: M each when N/M are kept.
        per_beam, extra = divmod(self.n, len(kept))
        return [self.expand(b, per_beam + (i < extra), lookahead=self.lookahead) for i, b in enumerate(kept)]

    def _dedupe(self, tree: SearchTree, beams: list[Node]) -> list[Node]:
        seen: set[str] = set()
        unique = []
        for beam in self.top(beams, len(beams)):
            text = beam.text
            if text in seen:
                tree.prune(beam)
            else:
                seen.add(text)
                unique.append(beam)
        return unique

    def candidates(self, tree: SearchTree) -> list[Node]:
        return self.best_first(tree.finished)[: self.n]


@dataclass(frozen=True, kw_only=True)
class LookaheadSearch(BeamSearch):
    """Beam search whose candidate steps are ranked after a k-step greedy rollout (k >= 1)."""

    lookahead: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lookahead < 1:
            raise ValueError("LookaheadSearch needs lookahead >= 1 (lookahead 0 is BeamSearch)")
