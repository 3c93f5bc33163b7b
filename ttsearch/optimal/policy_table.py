"""The fitted policy table: which strategy to run for a predicted difficulty bin and budget.

`fit_policy` bins the experiment's problems by the model-predicted heuristic (the mean
PRM score of a scored sampling run: no gold answer is needed, so a new problem can be
binned the same way from a probe) and ranks every option per (bin, N) on all problems.
The ranking, not only the winner, is stored: the online strategy takes the best option
that fits the budget left after its probe. `save_policy` / `load_policy` round-trip it
through JSON (`ttsearch fit-policy DIR -o policy.json`).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ttsearch.optimal.bins import fit_bins, level_of
from ttsearch.optimal.crossval import rank_options
from ttsearch.optimal.outcomes import Outcomes

FORMAT_VERSION = 1


class PolicyFileError(ValueError):
    """A policy file cannot be used (which file, what is wrong)."""


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

    thresholds: tuple[float, ...]  # see `ttsearch.optimal.bins`: score >= thresholds[0] is level 1
    reduction: str  # how the probe's step scores reduce to one score (the predictor run's)
    temperature: float  # the predictor run's sampling temperature (the probe samples at it)
    budgets: tuple[int, ...]  # increasing
    ranked: dict[int, dict[int, tuple[PolicyChoice, ...]]]  # N -> level -> options, best first
    source: dict[str, Any] = field(default_factory=dict)  # provenance: dirs, problems, seeds

    def __post_init__(self) -> None:
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
        return level_of(score, self.thresholds)

    def budget_for(self, n: int) -> int:
        """The table budget used for a total budget n: the largest recorded one <= n."""
        fitting = [b for b in self.budgets if b <= n]
        if not fitting:
            raise ValueError(f"budget {n} is below the policy table's smallest N={self.budgets[0]}")
        return fitting[-1]

    def options(self, n: int, level: int) -> tuple[PolicyChoice, ...]:
        return self.ranked[self.budget_for(n)][level]


def fit_policy(outcomes: Outcomes, *, source: Mapping[str, Any] | None = None) -> PolicyTable:
    """Rank every option per (model-predicted bin, N) on all of the experiment's problems.

    A bin without problems (fewer problems than bins) takes the ranking over all problems.

    :raises ValueError: the experiment has no sampling run scored by the PRM (needed to
        predict difficulty without the answer).
    """
    if outcomes.mean_score is None or outcomes.predictor is None:
        raise ValueError(
            "fitting a policy needs a sampling run scored by the PRM (e.g. a best_of_n entry) "
            "to predict difficulty from; this experiment has none"
        )
    bins = fit_bins("predicted", outcomes.mean_score, keys=outcomes.problems)
    everyone = np.arange(len(outcomes.problems))
    ranked: dict[int, dict[int, tuple[PolicyChoice, ...]]] = {}
    for n in outcomes.budgets:
        ranked[n] = {}
        for level in range(1, bins.num_levels + 1):
            members = everyone[bins.levels == level]
            if members.size == 0:
                members = everyone
            ranked[n][level] = tuple(
                _choice(outcomes, name, n, members) for name in rank_options(outcomes, n, members)
            )
    return PolicyTable(
        thresholds=bins.thresholds,
        reduction=outcomes.predictor.reduction,
        temperature=outcomes.predictor.temperature,
        budgets=outcomes.budgets,
        ranked=ranked,
        source={
            **dict(source or {}),
            "predictor": outcomes.predictor.label,
            "problems": len(outcomes.problems),
            "seeds": outcomes.num_seeds,
        },
    )


def _choice(outcomes: Outcomes, name: str, n: int, members: np.ndarray) -> PolicyChoice:
    option = outcomes.option(name)
    return PolicyChoice(
        label=option.label,
        strategy=option.strategy,
        config=dict(option.config),
        selection=option.selection,
        kind=option.kind,
        accuracy=float(outcomes.cells[(name, n)].accuracy[members].mean()),
    )


def policy_to_dict(table: PolicyTable) -> dict[str, Any]:
    return {
        "format": "ttsearch-policy",
        "version": FORMAT_VERSION,
        "thresholds": [_encode_float(t) for t in table.thresholds],
        "reduction": table.reduction,
        "temperature": table.temperature,
        "budgets": list(table.budgets),
        "table": [
            {"n": n, "level": level, "options": [asdict(c) for c in options]}
            for n, by_level in sorted(table.ranked.items())
            for level, options in sorted(by_level.items())
        ],
        "source": table.source,
    }


def policy_from_dict(data: Mapping[str, Any], *, where: str = "policy") -> PolicyTable:
    if data.get("format") != "ttsearch-policy" or data.get("version") != FORMAT_VERSION:
        raise PolicyFileError(f"{where}: not a ttsearch policy table (version {FORMAT_VERSION})")
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
        )
    except (KeyError, TypeError, ValueError) as error:
        raise PolicyFileError(f"{where}: {error}") from None


def save_policy(table: PolicyTable, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(policy_to_dict(table), indent=1) + "\n", encoding="utf-8")
    return path


def load_policy(path: str | Path) -> PolicyTable:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        hint = f"make one with `ttsearch fit-policy DIR -o {path}`"
        raise PolicyFileError(f"{path}: no such policy file ({hint})") from None
    except json.JSONDecodeError as error:
        raise PolicyFileError(f"{path}: not valid JSON ({error.msg})") from None
    return policy_from_dict(data, where=str(path))


def _encode_float(value: float) -> float | str:
    # JSON has no infinity; float("inf") parses "inf" back.
    return value if math.isfinite(value) else ("inf" if value > 0 else "-inf")
