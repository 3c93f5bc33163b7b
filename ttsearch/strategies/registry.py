"""Every built-in strategy by name, for recipes and the CLI."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from ttsearch.core.strategy import Strategy
from ttsearch.strategies.adaptive import AdaptiveBestOfN
from ttsearch.strategies.catalog import SEARCH_STRATEGIES, build_strategy
from ttsearch.strategies.compute_optimal import ComputeOptimal

STRATEGIES: dict[str, type[Strategy]] = {
    **SEARCH_STRATEGIES,
    "compute_optimal": ComputeOptimal,  # needs policy=<a PolicyTable: `ttsearch fit-policy`, then load_policy>
    "adaptive_best_of_n": AdaptiveBestOfN,  # a budget pool per batch (solve_all / run_jobs call)
}


def make_strategy(name: str, **options: Any) -> Strategy:
    """Build a built-in strategy; options left as None take the strategy's default.

    :raises ValueError: unknown name, an option the strategy does not have, or a bad value.
    """
    return build_strategy(STRATEGIES, name, **options)


def budget_unit(strategy: str, options: Mapping[str, Any]) -> int:
    """The step of N for registry name `strategy` recorded with `options`
    (`Strategy.budget_unit`: beam search's width, a revision chain's length); 1 unknown."""
    cls = STRATEGIES.get(strategy)
    return 1 if cls is None else cls.budget_unit(options)


def budget_kind(strategy: str | type[Strategy] | Strategy) -> Literal["sampling", "stepwise"]:
    """How a strategy's budget N is reported (issue #12 item 1).

    "sampling" (majority, best_of_n): N independent samples, so every budget k <= N can be
    read from one run. "stepwise" (beam, dvts, lookahead, and any strategy this registry
    does not know): the candidates of one search at N, reported at that N only.
    `strategy` is a registry name, a class name as results record it, a class or an instance.
    """
    if isinstance(strategy, str):
        by_name = {**STRATEGIES, **{cls.__name__: cls for cls in STRATEGIES.values()}}
        cls = by_name.get(strategy)
        if cls is None:
            return "stepwise"
    else:
        cls = strategy if isinstance(strategy, type) else type(strategy)
    return cls.budget_kind
