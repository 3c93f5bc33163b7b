"""`AdaptiveBestOfN`: best-of-N that moves budget between the problems of a batch online.

Every problem is entitled to N samples. It samples `initial` full solutions, then more in
chunks of `chunk` while its evidence is uncertain (the uncertainty of
`ttsearch.study.optimal.adaptive`: 1 - summed PRM score of the weighted winner's samples / samples
drawn). A problem whose uncertainty falls to `stop_uncertainty` stops early and deposits
the samples it did not use into a pool shared by the batch; a problem still uncertain
after its N samples draws further chunks from that pool, up to `max_samples`. The pool
never lends what was not deposited, so the batch never samples more than N x problems:
at most the compute of uniform best-of-N, and the rest is reported as unused.

The batch is one `solve_all` / `run_jobs` call (`solve`: a batch of one): the pool lives
in the trees' `batch_state`, so one strategy object serves any number of batches, each
with its own pool (`pool_of(tree)`). Which uncertain problem gets a deposit depends on
timing (first come, first served); the total never exceeds the budget.

Samples are counted when they are drawn (`drawn(tree)`), not when they come back
finished: a sample the engine drops (e.g. too long for the PRM) was generated and paid
for all the same, so it counts against the problem's N, and a problem whose samples are
all dropped stops at N instead of sampling forever.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ttsearch.core.strategy import Expand, Strategy
from ttsearch.core.tree import Node, SearchTree
from ttsearch.evaluation.aggregation import REDUCTIONS, SELECTION_METHODS, Reduction, candidate_keys, select_by_keys
from ttsearch.evaluation.extraction import extract_answer
from ttsearch.strategies.base import Selection


@dataclass(slots=True)
class BudgetPool:
    """Samples deposited by problems that stopped early, for problems still uncertain."""

    balance: int = 0
    deposited: int = 0
    withdrawn: int = 0

    def deposit(self, samples: int) -> None:
        assert samples >= 0, "a deposit is never negative"
        self.balance += samples
        self.deposited += samples

    def withdraw(self, wanted: int) -> int:
        granted = min(wanted, self.balance)
        self.balance -= granted
        self.withdrawn += granted
        return granted


@dataclass(frozen=True, kw_only=True, eq=False)
class AdaptiveBestOfN(Strategy):
    """Weighted best-of-N whose budget flows from settled problems to uncertain ones.

    Not a `SampledStrategy` on purpose: its problems hold different numbers of samples, so
    a budget k < N cannot be read from its candidates (it is reported at its N only).
    """

    n: int
    initial: int = 2
    chunk: int = 2
    stop_uncertainty: float = 0.2
    max_samples: int | None = None  # per problem; default 4 x n
    temperature: float = 0.8
    top_p: float = 1.0
    reduction: Reduction = "last"
    selection: Selection = "weighted"

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if not 1 <= self.initial <= self.n:
            raise ValueError(f"initial must be in [1, n={self.n}], got {self.initial}")
        if self.chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {self.chunk}")
        if not 0 <= self.stop_uncertainty <= 1:
            raise ValueError(f"stop_uncertainty must be in [0, 1], got {self.stop_uncertainty}")
        if self.max_samples is not None and self.max_samples < self.n:
            raise ValueError(f"max_samples must be >= n={self.n}, got {self.max_samples}")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"need temperature >= 0 and top_p in (0, 1], got {self.temperature}, {self.top_p}")
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {self.reduction!r}")
        if self.selection not in SELECTION_METHODS:
            raise ValueError(f"selection must be one of {SELECTION_METHODS}, got {self.selection!r}")

    @property
    def cap(self) -> int:
        return self.max_samples if self.max_samples is not None else 4 * self.n

    def pool_of(self, tree: SearchTree) -> BudgetPool:
        """The budget pool of `tree`'s batch (shared by the batch's problems)."""
        pool = tree.batch_state.setdefault(self, BudgetPool())
        assert isinstance(pool, BudgetPool)
        return pool

    def start(self, tree: SearchTree) -> Sequence[Expand]:
        return [self._sample(tree, self.initial)]

    def drawn(self, tree: SearchTree) -> int:
        """Samples this problem has asked for so far, in flight included."""
        count = tree.strategy_state.get(self, 0)
        assert isinstance(count, int)
        return count

    def update(self, tree: SearchTree, expansion: Expand, children: list[Node]) -> Sequence[Expand]:
        drawn = self.drawn(tree)
        if uncertainty(self, tree.finished) <= self.stop_uncertainty:
            self.pool_of(tree).deposit(max(0, self.n - drawn))
            return ()
        if drawn < self.n:
            return [self._sample(tree, min(self.chunk, self.n - drawn))]
        granted = self.pool_of(tree).withdraw(min(self.chunk, self.cap - drawn))
        return [self._sample(tree, granted)] if granted else ()

    def _sample(self, tree: SearchTree, n: int) -> Expand:
        # Counted here, when asked for: what comes back finished can be fewer (dropped samples).
        tree.strategy_state[self] = self.drawn(tree) + n
        return Expand(tree.root, n=n, temperature=self.temperature, top_p=self.top_p, to_completion=True)


def uncertainty(strategy: Strategy, nodes: Sequence[Node]) -> float:
    """1 - (summed score of the weighted winner's solutions) / (solutions); 1.0 without an answer."""

    if not nodes:
        return 1.0
    answers = [extract_answer(node.text) for node in nodes]
    scores = [strategy.score(node) for node in nodes]
    chosen = select_by_keys("weighted", answers, candidate_keys(answers), scores)
    if chosen is None:
        return 1.0
    return max(0.0, 1.0 - chosen.score / len(nodes)) if math.isfinite(chosen.score) else 1.0
