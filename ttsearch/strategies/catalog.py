"""The search strategies by name, and building one from options (recipes, the CLI).

These are the strategies that search on their own; `ttsearch.strategies.registry` adds
those that run others (compute-optimal, adaptive best-of-N), which build theirs from here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import MISSING
from typing import Any

from ttsearch.core.strategy import Strategy
from ttsearch.strategies.beam import BeamSearch, LookaheadSearch
from ttsearch.strategies.dvts import DVTS
from ttsearch.strategies.mcts import MCTS
from ttsearch.strategies.particle_filtering import EntropicParticleFiltering, ParticleFiltering, ParticleGibbs
from ttsearch.strategies.rebase import REBASE
from ttsearch.strategies.revisions import Revisions
from ttsearch.strategies.sampling import BestOfN, MajorityVoting

SEARCH_STRATEGIES: dict[str, type[Strategy]] = {
    "majority": MajorityVoting,
    "best_of_n": BestOfN,
    "beam": BeamSearch,
    "dvts": DVTS,
    "lookahead": LookaheadSearch,
    "rebase": REBASE,
    "mcts": MCTS,
    "particle_filtering": ParticleFiltering,
    "particle_gibbs": ParticleGibbs,
    "entropic_particle_filtering": EntropicParticleFiltering,
    "revisions": Revisions,
}


def option_fields(cls: type[Strategy]) -> dict[str, dataclasses.Field[Any]]:
    """The options a strategy class takes: its dataclass fields that `__init__` takes
    (class-level settings such as `budget_kind` are not options)."""
    if not dataclasses.is_dataclass(cls):
        return {}
    return {f.name: f for f in dataclasses.fields(cls) if f.init}


def option_names(cls: type[Strategy]) -> set[str]:
    """The names of `option_fields(cls)`."""
    return set(option_fields(cls))


def build_strategy(catalog: Mapping[str, type[Strategy]], name: str, **options: Any) -> Strategy:
    """Build the strategy `name` of `catalog`; options left as None take its default.

    :raises ValueError: unknown name, an option the strategy does not have, or a bad value.
    """
    try:
        cls = catalog[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; choose from {sorted(catalog)}") from None
    fields = option_fields(cls)
    given = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(given) - set(fields))
    if unknown:
        raise ValueError(f"strategy {name!r} has no option(s) {unknown}; it takes {sorted(fields)}")
    required = sorted(
        field_name
        for field_name, f in fields.items()
        if f.default is MISSING and f.default_factory is MISSING and field_name not in given
    )
    if required:
        raise ValueError(f"strategy {name!r} needs option(s) {required}")
    return cls(**given)
