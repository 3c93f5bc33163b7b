"""The policy table `ComputeOptimal` runs: which strategy to run for a predicted
difficulty level and budget N, as data (no file I/O here).

It is fitted from an experiment by `ttsearch.study.optimal.policy_table.fit_policy` and
read from / written to policy.json by that module's `load_policy` / `save_policy`
(`ttsearch fit-policy DIR -o policy.json`); `policy_from_dict` / `policy_to_dict` are the
JSON shape.

Version 2 (issue 20) records `probe`, the probe size the thresholds were fitted for (the
mean PRM score of that many samples); `ComputeOptimal` refuses a table fitted for another
probe. Version 1 tables still load, with `probe` None: their thresholds were fitted on each
problem's mean score over all its recorded samples, which a probe does not reproduce, so
refit them (`ttsearch fit-policy DIR -o policy.json --probe P`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ttsearch.errors import PolicyFileError

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1: no probe size (see the module doc)


@dataclass(frozen=True, slots=True)
class PolicyChoice:
    """One option of the table: a registered strategy with the config it was recorded with."""

    label: str
    strategy: str  # registry name (`ttsearch.strategies.registry.STRATEGIES`)
    config: dict[str, Any]  # dataclass fields as recorded; `n` is replaced by the budget left
    selection: str
    kind: str  # "sampling" | "stepwise"
    accuracy: float  # its accuracy on the bin's problems at this budget (in-sample)


@dataclass(frozen=True, slots=True)
class PolicyTable:
    """Thresholds of the model-predicted bins and the ranked options per (N, level)."""

    thresholds: tuple[float, ...]  # score >= thresholds[0] is level 1 (`ttsearch.study.optimal.bins`)
    reduction: str  # how the probe's step scores reduce to one score (the predictor run's)
    temperature: float  # the predictor run's sampling temperature (the probe samples at it)
    budgets: tuple[int, ...]  # increasing
    ranked: dict[int, dict[int, tuple[PolicyChoice, ...]]]  # N -> level -> options, best first
    source: dict[str, Any] = field(default_factory=dict)  # provenance: dirs, problems, seeds
    # The probe size (samples) the thresholds were fitted for; None: unknown (a version-1
    # file, or a table built by hand), which no probe is checked against.
    probe: int | None = None

    def __post_init__(self) -> None:
        if self.probe is not None and (isinstance(self.probe, bool) or self.probe < 1):
            raise ValueError(f"probe must be a number of samples >= 1, got {self.probe!r}")
        if list(self.thresholds) != sorted(self.thresholds, reverse=True):
            raise ValueError(f"thresholds must be non-increasing, got {self.thresholds}")
        if not self.budgets or list(self.budgets) != sorted(set(self.budgets)):
            raise ValueError(f"budgets must be non-empty and increasing, got {self.budgets}")
        levels = set(range(1, len(self.thresholds) + 2))
        for n in self.budgets:
            if n not in self.ranked or set(self.ranked[n]) != levels:
                raise ValueError(f"the table needs options for every level {sorted(levels)} at N={n}")
            if any(not options for options in self.ranked[n].values()):
                raise ValueError(f"a level has no option at N={n}")

    def level_of(self, score: float) -> int:
        if math.isnan(score):
            raise ValueError("cannot bin a NaN probe score")
        return 1 + sum(1 for t in self.thresholds if score < t)

    def budget_for(self, n: int) -> int:
        """The table budget used for a total budget n: the largest recorded one <= n."""
        fitting = [b for b in self.budgets if b <= n]
        if not fitting:
            raise ValueError(f"budget {n} is below the policy table's smallest N={self.budgets[0]}")
        return fitting[-1]

    def options(self, n: int, level: int) -> tuple[PolicyChoice, ...]:
        return self.ranked[self.budget_for(n)][level]


def policy_to_dict(table: PolicyTable) -> dict[str, Any]:
    return {
        "format": "ttsearch-policy",
        "version": FORMAT_VERSION,
        "thresholds": [_encode_float(t) for t in table.thresholds],
        "reduction": table.reduction,
        "temperature": table.temperature,
        "budgets": list(table.budgets),
        "probe": table.probe,
        "table": [
            {"n": n, "level": level, "options": [asdict(c) for c in options]}
            for n, by_level in sorted(table.ranked.items())
            for level, options in sorted(by_level.items())
        ],
        "source": table.source,
    }


def policy_from_dict(data: Mapping[str, Any], *, where: str = "policy") -> PolicyTable:
    if data.get("format") != "ttsearch-policy" or data.get("version") not in READABLE_VERSIONS:
        raise PolicyFileError(
            f"{where}: not a ttsearch policy table (versions {', '.join(map(str, READABLE_VERSIONS))}); "
            "make one with `ttsearch fit-policy DIR -o policy.json`"
        )
    try:
        ranked: dict[int, dict[int, tuple[PolicyChoice, ...]]] = {}
        for row in data["table"]:
            options = tuple(PolicyChoice(**option) for option in row["options"])
            ranked.setdefault(int(row["n"]), {})[int(row["level"])] = options
        return PolicyTable(
            thresholds=tuple(float(t) for t in data["thresholds"]),
            reduction=str(data["reduction"]),
            temperature=float(data["temperature"]),
            budgets=tuple(int(n) for n in data["budgets"]),
            ranked=ranked,
            source=dict(data.get("source", {})),
            probe=None if data.get("probe") is None else int(data["probe"]),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise PolicyFileError(f"{where}: {error}") from None


def _encode_float(value: float) -> float | str:
    # JSON has no infinity; float("inf") parses "inf" back.
    return value if math.isfinite(value) else ("inf" if value > 0 else "-inf")
