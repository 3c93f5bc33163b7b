"""Choose the best option per difficulty bin and budget, scored by k-fold cross-validation.

For each budget N and each fold f, the options are ranked on the problems of the other
folds that share a bin (mean accuracy; ties go to fewer generated tokens, then to the
earlier option), and the winner is scored on fold f's problems of that bin. A choice is
therefore never scored on a problem it was tuned on. A bin with no training problem in
some fold (a bin smaller than the fold count) takes the winner over all training
problems. The baseline gets the same treatment: the best *single* option is chosen on the
training folds and scored on the held-out one, so both curves pay for their choices.

Folds are stratified: each bin's problems are shuffled (seeded) and dealt round-robin.

Bins may be soft (`ttsearch.study.optimal.probe_bins.Membership`): a problem graded at
seed s belongs to each level with a weight (the share of its probe values there, from
another seed's samples). A level's ranking then weighs each (seed, problem)'s accuracy at
that seed by its weight, which is the expected accuracy of an option over the problems a
probe sends to that level; a held-out problem scores the expectation over its levels of
the options chosen for them. Hard bins are weights of 0 and 1, the same for every seed.
A bin fitted on data (the probe's thresholds) is fitted on the training folds only.
`probe_cost` (generated and PRM tokens per problem) is added to every compute-optimal
point of a heuristic that must run a probe to bin a problem.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ttsearch.study.optimal.bins import DifficultyBins, Heuristic
from ttsearch.study.optimal.outcomes import Cell, Outcomes
from ttsearch.study.optimal.probe_bins import Binner, Membership, fixed_binner, fixed_membership, graded_seeds


@dataclass(frozen=True, slots=True)
class CurvePoint:
    """Accuracy at one budget, and what it cost per problem on average."""

    n: int
    accuracy: float  # fraction of problems solved (mean over problems of the seed-mean)
    generated_tokens: float  # policy tokens per problem, the probe's included
    verifier_tokens: float  # PRM tokens computed per problem, the probe's included
    verifier_cached_tokens: float = 0.0  # PRM tokens read from its caches (not in the total)
    probe_tokens: float = 0.0  # of the total, what binning the problem cost (generated + PRM)

    @property
    def total_tokens(self) -> float:
        return self.generated_tokens + self.verifier_tokens


@dataclass(frozen=True, slots=True)
class BinChoice:
    """The per-bin table's row for one (bin, N): who wins, by how much."""

    level: int
    n: int
    num_problems: float  # problems in the bin (soft bins: the summed shares, averaged over seeds)
    winner: str  # option name chosen on all of this bin's problems (what a policy table stores)
    accuracy: float  # the winner's accuracy on this bin (in-sample)
    runner_up: str | None  # the best option of another strategy entry (label); None if there is none
    margin: float  # winner minus runner-up accuracy on this bin (0.0 without a runner-up)
    cv_accuracy: float  # accuracy of the cross-validated choices on this bin's held-out problems (weighted)
    ranking: tuple[str, ...]  # every option at N, best first (in-sample)


@dataclass(frozen=True, slots=True)
class CrossValidation:
    """Compute-optimal vs the best single option, both cross-validated, for one heuristic."""

    heuristic: Heuristic
    folds: int
    optimal: tuple[CurvePoint, ...]  # per-bin choice, per budget
    best_fixed: tuple[CurvePoint, ...]  # one option for every problem, chosen on the training folds
    table: tuple[BinChoice, ...]  # by N, then level
    choices: dict[int, tuple[str, ...]]  # N -> the held-out choice for each problem (its likeliest level's)
    leak_free: bool = False  # no held-out problem was binned by the samples it is graded on


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


class _Graded:
    """Each option's per-(seed, problem) accuracy and per-problem cost at one budget, read once."""

    def __init__(self, outcomes: Outcomes, n: int, seeds: Sequence[int]) -> None:
        self.names = [o.name for o in outcomes.options_at(n)]
        self.labels = {o.name: o.label for o in outcomes.options_at(n)}
        if not self.names:
            raise ValueError(f"no option was recorded at N={n}")
        cells = [outcomes.cells[(name, n)] for name in self.names]
        self.accuracy = {name: np.stack([c.accuracy_at(s) for s in seeds]) for name, c in zip(self.names, cells)}
        self.generated = {name: c.generated_tokens for name, c in zip(self.names, cells)}
        self.verifier = {name: c.verifier_tokens for name, c in zip(self.names, cells)}
        self.cached = {
            name: c.verifier_cached_tokens if c.verifier_cached_tokens is not None else np.zeros_like(c.verifier_tokens)
            for name, c in zip(self.names, cells)
        }

    def rank(self, weights: np.ndarray) -> list[str]:
        """Option names, best weighted accuracy first; ties: fewer generated tokens, then order.

        :param weights: (seeds, problems), not all zero.
        """
        total = weights.sum()
        per_problem = weights.sum(axis=0)
        scored = []
        for order, name in enumerate(self.names):
            accuracy = float((weights * self.accuracy[name]).sum() / total)
            tokens = float((per_problem * self.generated[name]).sum() / total)
            scored.append((-accuracy, tokens, order, name))
        return [name for *_, name in sorted(scored)]

    def weighted_accuracy(self, name: str, weights: np.ndarray) -> float:
        return float((weights * self.accuracy[name]).sum() / weights.sum())


def rank_options(outcomes: Outcomes, n: int, problems: np.ndarray) -> list[str]:
    """Option names at budget n, best mean accuracy over `problems` first; ties: fewer tokens."""
    graded = _Graded(outcomes, n, graded_seeds(outcomes))
    return graded.rank(_uniform(len(graded_seeds(outcomes)), len(outcomes.problems), problems))


def rank_by_level(outcomes: Outcomes, n: int, membership: Membership, problems: np.ndarray) -> dict[int, list[str]]:
    """Per level, the options ranked over `problems` weighted by their share in the level; a
    level none of them reaches takes the ranking over all of `problems`."""
    graded = _Graded(outcomes, n, membership.seeds)
    return _rankings(graded, membership, problems)


def cross_validate(
    outcomes: Outcomes,
    bins: DifficultyBins | Binner,
    *,
    folds: int = 5,
    seed: int = 0,
    fold_of: Sequence[int] | np.ndarray | None = None,
    heuristic: Heuristic | None = None,
    probe_cost: tuple[np.ndarray, np.ndarray] | None = None,
) -> CrossValidation:
    """Cross-validated compute-optimal and best-fixed curves, and the per-bin table.

    :param bins: fixed levels, or a `Binner` fitted on each fold's training problems.
    :param fold_of: explicit fold per problem (default: `assign_folds` stratified by level).
    :param heuristic: the bins' name (default: a `DifficultyBins`' own).
    :param probe_cost: (generated, PRM) tokens per problem that binning it costs.
    """
    seeds = graded_seeds(outcomes)
    if isinstance(bins, DifficultyBins):
        heuristic = heuristic or bins.heuristic
        binner = fixed_binner(fixed_membership(bins, seeds))
    elif heuristic is None:
        raise ValueError("name the heuristic of a binner")
    else:
        binner = bins
    size = len(outcomes.problems)
    everyone = np.arange(size)
    whole = binner(everyone)
    if whole.weights.shape[1] != size:
        raise ValueError(f"{whole.weights.shape[1]} binned problems for {size} problems")
    fold_array = (
        assign_folds(whole.likeliest_levels(), folds, seed=seed) if fold_of is None else np.asarray(fold_of, dtype=int)
    )
    if len(fold_array) != size:
        raise ValueError(f"{len(fold_array)} fold indices for {size} problems")
    fold_ids = sorted(set(fold_array.tolist()))
    if len(fold_ids) < 2:
        raise ValueError("cross-validation needs problems in at least 2 folds")
    fitted = {f: binner(everyone[fold_array != f]) for f in fold_ids}
    cost = probe_cost if probe_cost is not None else (np.zeros(size), np.zeros(size))
    optimal, fixed, table = [], [], []
    choices: dict[int, tuple[str, ...]] = {}
    for n in outcomes.budgets:
        graded = _Graded(outcomes, n, seeds)
        held = _HeldOut(size, whole.num_levels)
        fixed_choice: list[str] = [""] * size
        for f in fold_ids:
            train, test = everyone[fold_array != f], everyone[fold_array == f]
            overall = graded.rank(_uniform(len(seeds), size, train))[0]
            for i in test:
                fixed_choice[i] = overall
            picks = {level: ranking[0] for level, ranking in _rankings(graded, fitted[f], train).items()}
            held.score(graded, fitted[f], picks, test)
        choices[n] = tuple(held.chosen)
        optimal.append(held.point(n, cost))
        fixed.append(_point(outcomes, n, fixed_choice))
        table.extend(_bin_rows(graded, whole, n, held))
    return CrossValidation(
        heuristic=heuristic,
        folds=len(fold_ids),
        optimal=tuple(optimal),
        best_fixed=tuple(fixed),
        table=tuple(table),
        choices=choices,
        leak_free=whole.leak_free,
    )


class _HeldOut:
    """What the held-out problems scored under the choices of their folds (one budget)."""

    def __init__(self, size: int, num_levels: int) -> None:
        self.accuracy = np.zeros(size)
        self.generated = np.zeros(size)
        self.verifier = np.zeros(size)
        self.cached = np.zeros(size)
        self.chosen = [""] * size
        self.level_hits = np.zeros(num_levels)  # per level: weighted accuracy of its held-out choices
        self.level_weight = np.zeros(num_levels)

    def score(self, graded: _Graded, membership: Membership, picks: dict[int, str], test: np.ndarray) -> None:
        likeliest = membership.likeliest_levels()
        seeds = len(membership.seeds)
        for level, name in picks.items():
            weights = membership.level_weights(level)[:, test]  # (seeds, test problems)
            hits = weights * graded.accuracy[name][:, test]
            share = weights.sum(axis=0) / seeds  # the problem's mean share in this level
            self.accuracy[test] += hits.sum(axis=0) / seeds
            self.generated[test] += share * graded.generated[name][test]
            self.verifier[test] += share * graded.verifier[name][test]
            self.cached[test] += share * graded.cached[name][test]
            self.level_hits[level - 1] += hits.sum()
            self.level_weight[level - 1] += weights.sum()
        for i in test:
            self.chosen[i] = picks[int(likeliest[i])]

    def point(self, n: int, cost: tuple[np.ndarray, np.ndarray]) -> CurvePoint:
        generated, verifier = cost
        return CurvePoint(
            n=n,
            accuracy=float(self.accuracy.mean()),
            generated_tokens=float((self.generated + generated).mean()),
            verifier_tokens=float((self.verifier + verifier).mean()),
            verifier_cached_tokens=float(self.cached.mean()),
            probe_tokens=float((generated + verifier).mean()),
        )


def _rankings(graded: _Graded, membership: Membership, problems: np.ndarray) -> dict[int, list[str]]:
    seeds, size = membership.weights.shape[:2]
    overall = graded.rank(_uniform(seeds, size, problems))
    out = {}
    for level in range(1, membership.num_levels + 1):
        weights = _only(membership.level_weights(level), problems)
        out[level] = graded.rank(weights) if weights.sum() > 0 else overall
    return out


def _bin_rows(graded: _Graded, whole: Membership, n: int, held: _HeldOut) -> list[BinChoice]:
    rows = []
    seeds = len(whole.seeds)
    for level in range(1, whole.num_levels + 1):
        weights = whole.level_weights(level)
        if weights.sum() <= 0:
            continue
        ranking = graded.rank(weights)
        rival = next((name for name in ranking if graded.labels[name] != graded.labels[ranking[0]]), None)
        accuracy = graded.weighted_accuracy(ranking[0], weights)
        rows.append(
            BinChoice(
                level=level,
                n=n,
                num_problems=float(weights.sum() / seeds),
                winner=ranking[0],
                accuracy=accuracy,
                runner_up=rival,
                margin=accuracy - graded.weighted_accuracy(rival, weights) if rival else 0.0,
                cv_accuracy=float(held.level_hits[level - 1] / held.level_weight[level - 1])
                if held.level_weight[level - 1] > 0
                else float("nan"),
                ranking=tuple(ranking),
            )
        )
    return rows


def _uniform(seeds: int, size: int, problems: np.ndarray) -> np.ndarray:
    return _only(np.ones((seeds, size)), problems)


def _only(weights: np.ndarray, problems: np.ndarray) -> np.ndarray:
    """The weights of `problems`, zero elsewhere."""
    out = np.zeros_like(weights)
    out[:, problems] = weights[:, problems]
    return out


def fixed_curve(outcomes: Outcomes, name: str) -> tuple[CurvePoint, ...]:
    """One option's accuracy and cost at each budget it was recorded at."""
    budgets = [n for n in outcomes.budgets if (name, n) in outcomes.cells]
    return tuple(_point(outcomes, n, [name] * len(outcomes.problems)) for n in budgets)


def _point(outcomes: Outcomes, n: int, names: Sequence[str]) -> CurvePoint:
    cells = [outcomes.cells[(name, n)] for name in names]

    def mean(values: Callable[[Cell], np.ndarray | None]) -> float:
        return float(np.mean([_or_zero(values(c), i) for i, c in enumerate(cells)]))

    return CurvePoint(
        n=n,
        accuracy=mean(lambda c: c.accuracy),
        generated_tokens=mean(lambda c: c.generated_tokens),
        verifier_tokens=mean(lambda c: c.verifier_tokens),
        verifier_cached_tokens=mean(lambda c: c.verifier_cached_tokens),
    )


def _or_zero(values: np.ndarray | None, i: int) -> float:
    return 0.0 if values is None else float(values[i])
