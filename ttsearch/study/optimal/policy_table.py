"""The fitted policy table: which strategy to run for a predicted difficulty bin and budget.

`fit_policy` bins the experiment's problems the way `ComputeOptimal` bins a new one: by the
mean PRM score of `probe` samples (no gold answer needed). Every disjoint group of `probe`
consecutive samples of every seed of the predictor run (a scored sampling run) gives one
probe value; the thresholds are the equal-count quantiles of those values, and a problem
counts in a level's ranking with the share of its probe values there, drawn from another
seed than the run graded (`ttsearch.study.optimal.probe_bins`). Every option is ranked per
(level, N) on all problems; the ranking, not only the winner, is stored: the online
strategy takes the best option that fits the budget left after its probe. The table
records the probe size it was fitted for. `save_policy` / `load_policy` round-trip it
through JSON (`ttsearch fit-policy DIR -o policy.json --probe 2`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ttsearch.errors import PolicyFileError
from ttsearch.strategies.policy_table import PolicyChoice, PolicyTable, policy_from_dict, policy_to_dict
from ttsearch.study.optimal.crossval import rank_by_level
from ttsearch.study.optimal.outcomes import Outcomes
from ttsearch.study.optimal.probe_bins import Membership, graded_seeds, probe_binner


def fit_policy(outcomes: Outcomes, *, probe: int = 2, source: Mapping[str, Any] | None = None) -> PolicyTable:
    """Rank every option per (probe-predicted level, N) on all of the experiment's problems.

    A level no probe value reaches takes the ranking over all problems.

    :param probe: the probe size (samples) the online strategy will run with.
    :raises ValueError: the experiment has no sampling run scored by the PRM (needed to
        predict difficulty without the answer), or fewer samples per problem than `probe`.
    """
    if outcomes.predictor is None or not outcomes.predictor_scores:
        raise ValueError(
            "fitting a policy needs a sampling run scored by the PRM (e.g. a best_of_n entry) "
            "to predict difficulty from; this experiment has none"
        )
    everyone = np.arange(len(outcomes.problems))
    membership = probe_binner(outcomes, probe)(everyone)
    ranked: dict[int, dict[int, tuple[PolicyChoice, ...]]] = {}
    for n in outcomes.budgets:
        rankings = rank_by_level(outcomes, n, membership, everyone)
        ranked[n] = {
            level: tuple(_choice(outcomes, name, n, _level_weights(membership, level)) for name in names)
            for level, names in rankings.items()
        }
    return PolicyTable(
        thresholds=membership.thresholds,
        reduction=outcomes.predictor.reduction,
        temperature=outcomes.predictor.temperature,
        budgets=outcomes.budgets,
        ranked=ranked,
        source={
            **dict(source or {}),
            "predictor": outcomes.predictor.label,
            "problems": len(outcomes.problems),
            "seeds": outcomes.num_seeds,
            "statistic": f"mean PRM score of {probe} samples (every disjoint group of {probe} of every seed)",
        },
        probe=probe,
    )


def _level_weights(membership: Membership, level: int) -> np.ndarray:
    """(seeds, problems) weights of the level; uniform where no probe value reached it."""
    weights = membership.level_weights(level)
    return weights if weights.sum() > 0 else np.ones_like(weights)


def _choice(outcomes: Outcomes, name: str, n: int, weights: np.ndarray) -> PolicyChoice:
    option = outcomes.option(name)
    cell = outcomes.cells[(name, n)]
    accuracy = np.stack([cell.accuracy_at(s) for s in graded_seeds(outcomes)])
    return PolicyChoice(
        label=option.label,
        strategy=option.strategy,
        config=dict(option.config),
        selection=option.selection,
        kind=option.kind,
        accuracy=float((weights * accuracy).sum() / weights.sum()),
    )


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
