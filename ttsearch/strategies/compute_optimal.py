"""`ComputeOptimal`: probe a new problem's difficulty, then run what the policy table says.

Per problem: sample `probe` full solutions at the table's temperature and score them with
the PRM (one expansion of the root); their mean score (reduced as the table's predictor
run reduced it) gives the predicted difficulty level through the table's thresholds (a
probe the PRM could not score at all, every sample too long for it, goes to the hardest
level). The strategy then runs the best option of that (level, N) that fits the budget left:

* a sampling option (majority / best-of-N) draws N - probe more samples; when it samples
  at the probe's temperature the probe samples join its candidates (they are draws from
  the same distribution), so it selects from exactly N samples, the probe included;
* a stepwise option runs with the largest multiple of its budget unit that is <= N - probe
  (`Strategy.budget_unit`: beam search's width, a revision chain's length); an option that
  cannot fit is skipped for the next best. A table with a revisions option needs a policy
  that renders revision prompts (`requires_revision_prompts`).

The probe is part of the budget, and of `Usage` (the engine counts every request). The
chosen strategy sees the tree without the probe's nodes (`_ProbeHidden`), so its own
bookkeeping (e.g. beam search stopping at N finished beams) is unchanged. Because the
PRM must score the probe, a chosen majority vote also gets its samples scored: that cost
is counted too.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

from ttsearch.core.strategy import Expand, Strategy
from ttsearch.core.tree import Node, SearchTree
from ttsearch.evaluation.aggregation import REDUCTIONS, Reduction, reduce_scores
from ttsearch.evaluation.aggregation import SelectionMethod as Selection
from ttsearch.strategies.catalog import SEARCH_STRATEGIES, build_strategy, option_names
from ttsearch.strategies.policy_table import PolicyChoice, PolicyTable

_PROBE = "compute-optimal-probe"  # group of the probe's nodes


@dataclass(slots=True)
class ProblemPlan:
    """What ComputeOptimal decided for one problem (readable with `plan(tree)`)."""

    probe_score: float  # mean reduced PRM score of the probe samples (NaN: the PRM scored none)
    level: int  # predicted difficulty level (1 = easiest)
    choice: PolicyChoice
    inner: Strategy  # the strategy run with the budget left
    pooled: bool  # the probe samples are among the final candidates
    view: _ProbeHidden
    probe_nodes: list[Node]


@dataclass(frozen=True, kw_only=True, eq=False)
class ComputeOptimal(Strategy):
    """Predict the difficulty bin from a PRM-scored probe, then run the table's choice.

    `policy` is the `PolicyTable` (read a policy.json with
    `ttsearch.study.optimal.load_policy`; recipes do it for you); `policy_file` names where
    it came from, which results record instead of the whole table.
    `n` is the total budget (probe included); the table is read at its largest N <= n.
    `selection` only names the method of a problem that failed before the choice.
    """

    n: int
    policy: PolicyTable
    probe: int = 2
    selection: Selection = "weighted"
    policy_file: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.policy, PolicyTable):
            raise TypeError(
                f"policy must be a PolicyTable (load a policy.json with load_policy), got {type(self.policy).__name__}"
            )
        if self.probe < 1:
            raise ValueError(f"probe must be >= 1 sample, got {self.probe}")
        if self.n <= self.probe:
            raise ValueError(f"n={self.n} leaves nothing after a probe of {self.probe} samples")
        fitted_for = self.policy.probe
        if fitted_for is not None and fitted_for != self.probe:
            # Its thresholds are quantiles of a mean of `fitted_for` scores; another probe size spreads differently.
            raise ValueError(
                f"the policy table was fitted for a probe of {fitted_for} samples, not probe={self.probe}: "
                f"run with probe={fitted_for}, or refit it with `ttsearch fit-policy DIR -o policy.json --probe {self.probe}`"
            )
        self.table.budget_for(self.n)  # raises if n is below the table's budgets

    @property
    def table(self) -> PolicyTable:
        return self.policy

    def requires_revision_prompts(self) -> bool:
        """True when an option of the table revises (the policy must render its prompts)."""
        return any(
            cls is not None and cls.needs_revision_prompts
            for by_level in self.table.ranked.values()
            for options in by_level.values()
            for cls in (SEARCH_STRATEGIES.get(choice.strategy) for choice in options)
        )

    def options(self) -> dict[str, Any]:
        """As results record it: the policy table's file, not the whole table."""
        return {
            "n": self.n,
            "policy": self.policy_file,
            "policy_file": self.policy_file,
            "probe": self.probe,
            "selection": self.selection,
        }

    @property
    def reduction(self) -> Reduction:  # type: ignore[override]  # read-only where Strategy declares a field; nothing assigns it
        how = self.table.reduction
        if not _is_reduction(how):
            raise ValueError(f"unknown reduction {how!r}; expected one of {REDUCTIONS}")
        return how

    def plan(self, tree: SearchTree) -> ProblemPlan | None:
        """The decision made for this problem's tree (None before the probe is scored)."""
        plan = tree.strategy_state.get(self)
        return plan if isinstance(plan, ProblemPlan) else None

    def start(self, tree: SearchTree) -> Sequence[Expand]:
        return [Expand(tree.root, n=self.probe, temperature=self.table.temperature, to_completion=True, group=_PROBE)]

    def update(self, tree: SearchTree, expansion: Expand, children: list[Node]) -> Sequence[Expand]:
        plan = self.plan(tree)
        if plan is None:  # the probe is back
            plan = self._decide(tree, children)
            tree.strategy_state[self] = plan
            return plan.inner.start(plan.view)  # type: ignore[arg-type]  # _ProbeHidden stands in for the SearchTree (a proxy)
        return plan.inner.update(plan.view, expansion, children)  # type: ignore[arg-type]  # _ProbeHidden stands in for the SearchTree (a proxy)

    def candidates(self, tree: SearchTree) -> list[Node]:
        plan = self.plan(tree)
        if plan is None:
            return list(tree.finished)
        chosen = plan.inner.candidates(plan.view)  # type: ignore[arg-type]  # _ProbeHidden stands in for the SearchTree (a proxy)
        return plan.probe_nodes + chosen if plan.pooled else chosen

    def resolved(self, tree: SearchTree) -> Strategy:
        plan = self.plan(tree)
        return self if plan is None else plan.inner

    def _decide(self, tree: SearchTree, probe_nodes: list[Node]) -> ProblemPlan:
        probe_score, level = self._predict_level(probe_nodes)
        left = self.n - self.probe
        for choice in self.table.options(self.n, level):
            built = self._build(choice, left)
            if built is not None:
                inner, pooled = built
                view = _ProbeHidden(tree, set(probe_nodes))
                return ProblemPlan(probe_score, level, choice, inner, pooled, view, list(probe_nodes))
        raise ValueError(f"no option of the policy table fits a budget of {left} after the probe (level {level})")

    def _predict_level(self, probe_nodes: list[Node]) -> tuple[float, int]:
        """The probe's mean reduced score and the level the table's thresholds give it.

        `probe_nodes` are the probe samples the engine kept: one too long for the PRM is
        dropped unscored. When it dropped every one there is no score to bin by; the
        problem then goes to the hardest level (score NaN): that is where an unscored
        sample already counts (a score of 0.0), and a solution too long for the PRM is
        more likely a hard problem's.
        """
        if not probe_nodes:
            return math.nan, len(self.table.thresholds) + 1
        scores = [reduce_scores(node.step_scores, self.reduction) if node.step_scores else 0.0 for node in probe_nodes]
        probe_score = math.fsum(scores) / len(scores)
        return probe_score, self.table.level_of(probe_score)

    def _build(self, choice: PolicyChoice, left: int) -> tuple[Strategy, bool] | None:
        cls = SEARCH_STRATEGIES.get(choice.strategy)
        if cls is None:
            raise ValueError(
                f"the policy table's option {choice.label!r} runs {choice.strategy!r}, "
                f"not one of the search strategies {sorted(SEARCH_STRATEGIES)}"
            )
        # Only the strategy's own fields: a table fitted from an experiment's manifest may
        # also carry its entry's "strategy" name (or other bookkeeping keys).
        fields = option_names(cls)
        config: dict[str, Any] = {k: v for k, v in choice.config.items() if k in fields}
        config["selection"] = choice.selection
        if choice.kind == "stepwise":
            unit = cls.budget_unit(config)
            n = left // unit * unit
            if n < 1:
                return None
        else:
            n = left
        config["n"] = n
        inner = build_strategy(SEARCH_STRATEGIES, choice.strategy, **config)
        pooled = choice.kind == "sampling" and float(config.get("temperature", math.nan)) == self.table.temperature
        return inner, pooled


def _is_reduction(how: str) -> TypeGuard[Reduction]:
    return how in REDUCTIONS


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
