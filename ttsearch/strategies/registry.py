"""Built-in strategies by name, for the CLI and configuration files."""

from __future__ import annotations

from dataclasses import MISSING
from typing import Any, Literal

from ttsearch.strategies.base import SampledStrategy, StepwiseStrategy, Strategy
from ttsearch.strategies.beam import BeamSearch, LookaheadSearch
from ttsearch.strategies.dvts import DVTS
from ttsearch.strategies.sampling import BestOfN, MajorityVoting
from ttsearch.optimal.budget_pool import AdaptiveBestOfN
from ttsearch.optimal.strategy import ComputeOptimal

STRATEGIES: dict[str, type[Strategy]] = {
    "majority": MajorityVoting,
    "best_of_n": BestOfN,
    "beam": BeamSearch,
    "dvts": DVTS,
    "lookahead": LookaheadSearch,
    "compute_optimal": ComputeOptimal,  # needs policy=<policy.json from `ttsearch fit-policy`>
    "adaptive_best_of_n": AdaptiveBestOfN,  # one object = one batch sharing a budget pool
}


def make_strategy(name: str, **options: Any) -> Strategy:
    """Build a built-in strategy; options left as None take the strategy's default.

    :raises ValueError: unknown name, an option the strategy does not have, or a bad value.
    """
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; choose from {sorted(STRATEGIES)}") from None
    fields = getattr(cls, "__dataclass_fields__", {})
    given = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(given) - set(fields))
    if unknown:
        raise ValueError(f"strategy {name!r} has no option(s) {unknown}; it takes {sorted(fields)}")
    required = sorted(
        name
        for name, f in fields.items()
        if f.init and f.default is MISSING and f.default_factory is MISSING and name not in given
    )
    if required:
        raise ValueError(f"strategy {name!r} needs option(s) {required}")
    return cls(**given)


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
    sampling = issubclass(cls, SampledStrategy) and not issubclass(cls, StepwiseStrategy)
    return "sampling" if sampling else "stepwise"
