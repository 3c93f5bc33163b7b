"""Built-in strategies by name, for the CLI and configuration files."""

from __future__ import annotations

from typing import Any

from ttsearch.strategies.base import Strategy
from ttsearch.strategies.beam import BeamSearch, LookaheadSearch
from ttsearch.strategies.dvts import DVTS
from ttsearch.strategies.sampling import BestOfN, MajorityVoting

STRATEGIES: dict[str, type[Strategy]] = {
    "majority": MajorityVoting,
    "best_of_n": BestOfN,
    "beam": BeamSearch,
    "dvts": DVTS,
    "lookahead": LookaheadSearch,
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
    return cls(**given)
