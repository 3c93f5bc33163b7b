"""`ComputeOptimal`: probe a new problem's difficulty, then run what the policy table says.

Per problem: sample `probe` full solutions at the table's temperature and score them with
the PRM (one expansion of the root); their mean score (reduced as the table's predictor
run reduced it) gives the predicted difficulty level through the table's thresholds. The
strategy then runs the best option of that (level, N) that fits the budget left:

* a sampling option (majority / best-of-N) draws N - probe more samples; when it samples
  at the probe's temperature the probe samples join its candidates (they are draws from
  the same distribution), so it selects from exactly N samples, the probe included;
* a stepwise option (beam search, DVTS, lookahead) runs with the largest multiple of its
  width that is <= N - probe; an option that cannot fit is skipped for the next best.

The probe is part of the budget, and of `Usage` (the engine counts every request). The
chosen strategy sees the tree without the probe's nodes (`_ProbeHidden`), so its own
bookkeeping (e.g. beam search stopping at N finished beams) is unchanged. Because the
PRM must score the probe, a chosen majority vote also gets its samples scored: that cost
is counted too.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from ttsearch.engine.tree import Node, SearchTree
from ttsearch.evaluation.aggregation import reduce_scores
from ttsearch.optimal.policy_table import PolicyChoice, PolicyTable, load_policy
from ttsearch.strategies.base import Expand, Selection, Strategy

_PROBE = "compute-optimal-probe"  # group of the probe's nodes


@dataclass(slots=True)
class ProblemPlan:
    """What ComputeOptimal decided for one problem (readable with `plan(tree)`)."""

    probe_score: float  # mean reduced PRM score of the probe samples
    level: int  # predicted difficulty level (1 = easiest)
    choice: PolicyChoice
    inner: Strategy  # the strategy run with the budget left
    pooled: bool  # the probe samples are among the final candidates
    view: _ProbeHidden
    probe_nodes: list[Node]


@dataclass(frozen=True, kw_only=True, eq=False)
class ComputeOptimal(Strategy):
    """Predict the difficulty bin from a PRM-scored probe, then run the table's choice.

    `policy` is a `PolicyTable` or the path of a policy.json (`ttsearch fit-policy`),
    loaded once, when the strategy is made (`table`).
    `n` is the total budget (probe included); the table is read at its largest N <= n.
    `selection` only names the method of a problem that failed before the choice.
    """

    n: int
    policy: PolicyTable | str | Path
    probe: int = 2
    selection: Selection = "weighted"

    def __post_init__(self) -> None:
        # A path stays the `policy` field (what results record as the config: the path, not
        # a copy of the whole table in every record); the table it names is `table`.
        table = load_policy(self.policy) if isinstance(self.policy, (str, Path)) else self.policy
        if not isinstance(table, PolicyTable):
            raise TypeError(f"policy must be a PolicyTable or a path, got {type(self.policy).__name__}")
        object.__setattr__(self, "_table", table)
        if isinstance(self.policy, Path):
            object.__setattr__(self, "policy", str(self.policy))
        if self.probe < 1:
            raise ValueError(f"probe must be >= 1 sample, got {self.probe}")
        if self.n <= self.probe:
            raise ValueError(f"n={self.n} leaves nothing after a probe of {self.probe} samples")
        self.table.budget_for(self.n)  # raises if n is below the table's budgets
        object.__setattr__(self, "_plans", weakref.WeakKeyDictionary())

    @property
    def table(self) -> PolicyTable:
        return self._table  # type: ignore[attr-defined, no-any-return]

    @property
    def reduction(self) -> str:  # type: ignore[override]
        return self.table.reduction

    def plan(self, tree: SearchTree) -> ProblemPlan | None:
        """The decision made for this problem's tree (None before the probe is scored)."""
        return self._plans.get(tree)  # type: ignore[attr-defined, no-any-return]

    def start(self, tree: SearchTree) -> Sequence[Expand]:
        return [Expand(tree.root, n=self.probe, temperature=self.table.temperature, to_completion=True, group=_PROBE)]

    def update(self, tree: SearchTree, expansion: Expand, children: list[Node]) -> Sequence[Expand]:
        plan = self.plan(tree)
        if plan is None:  # the probe is back
            plan = self._decide(tree, children)
            self._plans[tree] = plan  # type: ignore[attr-defined]
            return plan.inner.start(plan.view)  # type: ignore[arg-type]
        return plan.inner.update(plan.view, expansion, children)  # type: ignore[arg-type]

    def candidates(self, tree: SearchTree) -> list[Node]:
        plan = self.plan(tree)
        if plan is None:
            return list(tree.finished)
        chosen = plan.inner.candidates(plan.view)  # type: ignore[arg-type]
        return plan.probe_nodes + chosen if plan.pooled else chosen

    def resolved(self, tree: SearchTree) -> Strategy:
        plan = self.plan(tree)
        return self if plan is None else plan.inner

    def _decide(self, tree: SearchTree, probe_nodes: list[Node]) -> ProblemPlan:
        scores = [reduce_scores(node.step_scores, self.reduction) if node.step_scores else 0.0 for node in probe_nodes]
        probe_score = math.fsum(scores) / len(scores)
        level = self.table.level_of(probe_score)
        left = self.n - self.probe
        for choice in self.table.options(self.n, level):
            built = self._build(choice, left)
            if built is not None:
                inner, pooled = built
                view = _ProbeHidden(tree, set(probe_nodes))
                return ProblemPlan(probe_score, level, choice, inner, pooled, view, list(probe_nodes))
        raise ValueError(f"no option of the policy table fits a budget of {left} after the probe (level {level})")

    def _build(self, choice: PolicyChoice, left: int) -> tuple[Strategy, bool] | None:
        from ttsearch.strategies.registry import STRATEGIES, make_strategy  # the registry imports this module

        # Only the strategy's own fields: a table fitted from an experiment's manifest may
        # also carry its entry's "strategy" name (or other bookkeeping keys).
        fields = getattr(STRATEGIES.get(choice.strategy), "__dataclass_fields__", None)
        config: dict[str, Any] = {k: v for k, v in choice.config.items() if fields is None or k in fields}
        config["selection"] = choice.selection
        if choice.kind == "stepwise":
            width = int(config.get("width", 1))
            n = left // width * width
            if n < 1:
                return None
        else:
            n = left
        config["n"] = n
        inner = make_strategy(choice.strategy, **config)
        pooled = choice.kind == "sampling" and float(config.get("temperature", math.nan)) == self.table.temperature
        return inner, pooled


class _ProbeHidden:
    """The search tree as the chosen strategy should see it: without the probe's nodes.

    Reads and writes go to the real tree; only `finished` and `frontier` leave the probe
    out (the probe's nodes are all terminal, so only `finished` ever holds them).
    """

    def __init__(self, tree: SearchTree, hidden: set[Node]) -> None:
        self._tree = tree
        self._hidden = hidden

    @property
    def finished(self) -> list[Node]:
        return [node for node in self._tree.finished if node not in self._hidden]

    @property
    def frontier(self) -> list[Node]:
        return [node for node in self._tree.frontier if node not in self._hidden]

    def nodes(self) -> Iterator[Node]:
        return (node for node in self._tree.nodes() if node not in self._hidden)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tree, name)
