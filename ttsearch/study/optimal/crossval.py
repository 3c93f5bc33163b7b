"""Choose the best option per difficulty bin and budget, scored by k-fold cross-validation.

For each budget N and each fold f, the options are ranked on the problems of the other
folds that share a bin (mean accuracy; ties go to fewer generated tokens, then to the
earlier option), and the winner is scored on fold f's problems of that bin. A choice is
therefore never scored on a problem it was tuned on. A bin with no training problem in
some fold (a bin smaller than the fold count) takes the winner over all training
problems. The baseline gets the same treatment: the best *single* option is chosen on the
training folds and scored on the held-out one, so both curves pay for their choices.

Folds are stratified: each bin's problems are shuffled (seeded) and dealt round-robin.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ttsearch.study.optimal.bins import DifficultyBins, Heuristic
from ttsearch.study.optimal.outcomes import Outcomes


@dataclass(frozen=True, slots=True)
class CurvePoint:
    """Accuracy at one budget, and what it cost per problem on average."""

    n: int
    accuracy: float  # fraction of problems solved (mean over problems of the seed-mean)
    generated_tokens: float  # policy tokens per problem
    verifier_tokens: float  # PRM tokens per problem

    @property
    def total_tokens(self) -> float:
        return self.generated_tokens + self.verifier_tokens


@dataclass(frozen=True, slots=True)
class BinChoice:
    """The per-bin table's row for one (bin, N): who wins, by how much."""

    level: int
    n: int
    num_problems: int
    winner: str  # option name chosen on all of this bin's problems (what a policy table stores)
    accuracy: float  # the winner's accuracy on this bin (in-sample)
    runner_up: str | None  # the best option of another strategy entry (label); None if there is none
    margin: float  # winner minus runner-up accuracy on this bin (0.0 without a runner-up)
    cv_accuracy: float  # accuracy of the cross-validated choices on this bin's held-out problems
    ranking: tuple[str, ...]  # every option at N, best first (in-sample)


@dataclass(frozen=True, slots=True)
class CrossValidation:
    """Compute-optimal vs the best single option, both cross-validated, for one heuristic."""

    heuristic: Heuristic
    folds: int
    optimal: tuple[CurvePoint, ...]  # per-bin choice, per budget
    best_fixed: tuple[CurvePoint, ...]  # one option for every problem, chosen on the training folds
    table: tuple[BinChoice, ...]  # by N, then level
    choices: dict[int, tuple[str, ...]]  # N -> the held-out choice for each problem


def assign_folds(levels: Sequence[int] | np.ndarray, folds: int, *, seed: int = 0) -> np.ndarray:
    """Fold index per problem, stratified by level (seeded shuffle, then round-robin)."""
    if folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {folds}")
    level_array = np.asarray(levels)
    if len(level_array) < folds:
        raise ValueError(f"{len(level_array)} problems cannot fill {folds} folds")
    rng = np.random.default_rng(seed)
    fold_of = np.zeros(len(level_array), dtype=int)
    offset = 0  # continue the deal across bins so small bins do not all start at fold 0
    for level in sorted(set(level_array.tolist())):
        members = np.flatnonzero(level_array == level)
        rng.shuffle(members)
        for j, i in enumerate(members):
            fold_of[i] = (offset + j) % folds
        offset += len(members)
    return fold_of


def rank_options(outcomes: Outcomes, n: int, problems: np.ndarray) -> list[str]:
    """Option names at budget n, best mean accuracy over `problems` first; ties: fewer tokens."""
    options = outcomes.options_at(n)
    if not options:
        raise ValueError(f"no option was recorded at N={n}")
    scored = []
    for order, option in enumerate(options):
        cell = outcomes.cells[(option.name, n)]
        scored.append((-cell.accuracy[problems].mean(), cell.generated_tokens[problems].mean(), order, option.name))
    return [name for *_, name in sorted(scored)]


def cross_validate(
    outcomes: Outcomes,
    bins: DifficultyBins,
    *,
    folds: int = 5,
    seed: int = 0,
    fold_of: Sequence[int] | None = None,
) -> CrossValidation:
    """Cross-validated compute-optimal and best-fixed curves, and the per-bin table.

    :param fold_of: explicit fold per problem (default: `assign_folds(levels, folds, seed)`).
    """
    levels = np.asarray(bins.levels)
    if len(levels) != len(outcomes.problems):
        raise ValueError(f"{len(levels)} levels for {len(outcomes.problems)} problems")
    fold_array = assign_folds(levels, folds, seed=seed) if fold_of is None else np.asarray(fold_of, dtype=int)
    if len(fold_array) != len(levels):
        raise ValueError(f"{len(fold_array)} fold indices for {len(levels)} problems")
    fold_ids = sorted(set(fold_array.tolist()))
    if len(fold_ids) < 2:
        raise ValueError("cross-validation needs problems in at least 2 folds")
    everyone = np.arange(len(levels))
    optimal, fixed, table = [], [], []
    choices: dict[int, tuple[str, ...]] = {}
    for n in outcomes.budgets:
        chosen: list[str] = [""] * len(levels)
        fixed_choice: list[str] = [""] * len(levels)
        for f in fold_ids:
            held_out = fold_array == f
            train = everyone[~held_out]
            overall = rank_options(outcomes, n, train)[0]
            for i in everyone[held_out]:
                fixed_choice[i] = overall
            for level in sorted(set(levels[held_out].tolist())):
                in_bin = train[levels[train] == level]
                pick = rank_options(outcomes, n, in_bin)[0] if in_bin.size else overall
                for i in everyone[held_out & (levels == level)]:
                    chosen[i] = pick
        choices[n] = tuple(chosen)
        optimal.append(_point(outcomes, n, chosen))
        fixed.append(_point(outcomes, n, fixed_choice))
        for level in sorted(set(levels.tolist())):
            members = everyone[levels == level]
            ranking = rank_options(outcomes, n, members)
            winner_label = outcomes.option(ranking[0]).label
            rival = next((name for name in ranking if outcomes.option(name).label != winner_label), None)
            acc = [outcomes.cells[(name, n)].accuracy[members].mean() for name in (ranking[0], rival) if name]
            held = [outcomes.cells[(chosen[i], n)].accuracy[i] for i in members]
            table.append(
                BinChoice(
                    level=level,
                    n=n,
                    num_problems=len(members),
                    winner=ranking[0],
                    accuracy=float(acc[0]),
                    runner_up=rival,
                    margin=float(acc[0] - acc[1]) if len(acc) > 1 else 0.0,
                    cv_accuracy=float(np.mean(held)),
                    ranking=tuple(ranking),
                )
            )
    return CrossValidation(
        heuristic=bins.heuristic,
        folds=len(fold_ids),
        optimal=tuple(optimal),
        best_fixed=tuple(fixed),
        table=tuple(table),
        choices=choices,
    )


def fixed_curve(outcomes: Outcomes, name: str) -> tuple[CurvePoint, ...]:
    """One option's accuracy and cost at each budget it was recorded at."""
    budgets = [n for n in outcomes.budgets if (name, n) in outcomes.cells]
    return tuple(_point(outcomes, n, [name] * len(outcomes.problems)) for n in budgets)


def _point(outcomes: Outcomes, n: int, names: Sequence[str]) -> CurvePoint:
    cells = [outcomes.cells[(name, n)] for name in names]
    return CurvePoint(
        n=n,
        accuracy=float(np.mean([c.accuracy[i] for i, c in enumerate(cells)])),
        generated_tokens=float(np.mean([c.generated_tokens[i] for i, c in enumerate(cells)])),
        verifier_tokens=float(np.mean([c.verifier_tokens[i] for i, c in enumerate(cells)])),
    )
