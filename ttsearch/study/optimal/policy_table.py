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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ttsearch.errors import PolicyFileError
from ttsearch.strategies.policy_table import PolicyChoice, PolicyTable, policy_from_dict, policy_to_dict
from ttsearch.study.optimal.bins import fit_bins
from ttsearch.study.optimal.crossval import rank_options
from ttsearch.study.optimal.outcomes import Outcomes


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
            ranked[n][level] = tuple(_choice(outcomes, name, n, members) for name in rank_options(outcomes, n, members))
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
