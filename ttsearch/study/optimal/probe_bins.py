"""Difficulty bins a new problem can have, and that never use the samples being graded.

Two leaks this module closes (issue 20):

* A new problem is binned online by its *probe*: the mean PRM score of `probe` samples (at
  the predictor run's temperature and reduction). The thresholds must be fitted on that
  statistic, not on each problem's mean over all its recorded samples (which spreads much
  less, so a probe would land in levels 1 and 5 far more often than a fifth of the time).
  Here every disjoint group of `probe` consecutive samples of every seed of the predictor
  run gives one probe value; the thresholds are the equal-count quantiles of those values
  (`ttsearch.study.optimal.bins`), and a problem belongs to each level with the fraction of
  its probe values that land there (`level_of`: exactly how a new problem is binned).
* A problem's bin must not come from the samples whose accuracy is counted. Runs with the
  same seed share their first samples (tree-position seeds), so the bins used to grade a
  problem at seed s come from the other seeds' samples. With one seed only there is no
  other: the predictor's first `probe` samples are used (`Membership.leak_free` is False).

Both heuristics without the leak share one shape, `Membership`: per graded seed s, per
problem, the weight of each level. The paper's oracle (pass rate over the same samples) is
a `Membership` too, with the same levels for every seed: the upper reference, with its leak.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ttsearch.evaluation.difficulty import NUM_LEVELS
from ttsearch.study.optimal.bins import DifficultyBins, fit_bins
from ttsearch.study.optimal.outcomes import Outcomes


@dataclass(frozen=True, slots=True)
class Membership:
    """Bins as weights: weights[k, i, level - 1] is the share of problem i's bin statistic
    (its probe values) in that level when it is graded at seed `seeds[k]`; each (k, i)
    sums to 1."""

    seeds: tuple[int, ...]
    weights: np.ndarray  # (seeds, problems, levels)
    thresholds: tuple[float, ...]  # the levels' boundaries (`bins.level_of`); () for fixed levels
    leak_free: bool  # no problem's bin came from the samples it is graded on

    @property
    def num_levels(self) -> int:
        return int(self.weights.shape[2])

    def level_weights(self, level: int) -> np.ndarray:
        """(seeds, problems) weights of one level (1-based)."""
        return np.asarray(self.weights[:, :, level - 1])

    def likeliest_levels(self) -> np.ndarray:
        """Per problem, the level most of its weight is in (ties: the easier level)."""
        return np.asarray(self.weights.mean(axis=0).argmax(axis=1) + 1)


# Fits a Membership from the training problems (their indices) for every problem.
Binner = Callable[[np.ndarray], Membership]


def graded_seeds(outcomes: Outcomes) -> tuple[int, ...]:
    """The seeds runs are graded at (one placeholder seed where the outcomes carry none)."""
    return outcomes.seeds or (0,)


def fixed_membership(bins: DifficultyBins, seeds: Sequence[int]) -> Membership:
    """Fixed levels (e.g. the paper's oracle), the same for every seed."""
    levels = np.asarray(bins.levels, dtype=int)
    one_hot = np.zeros((len(levels), bins.num_levels))
    one_hot[np.arange(len(levels)), levels - 1] = 1.0
    return Membership(tuple(seeds), np.repeat(one_hot[None], len(seeds), axis=0), (), leak_free=False)


def probe_values(outcomes: Outcomes, probe: int) -> dict[int, np.ndarray]:
    """Per predictor seed: (problems, groups) mean score of each disjoint group of `probe`
    consecutive samples, the statistic the online probe computes.

    :raises ValueError: probe < 1, no scored sampling run, or fewer samples than `probe`.
    """
    if probe < 1:
        raise ValueError(f"probe must be >= 1, got {probe}")
    if outcomes.predictor is None or not outcomes.predictor_scores:
        raise ValueError(
            "binning by a probe needs a sampling run scored by the PRM (e.g. a best_of_n entry); this experiment has none"
        )
    out = {}
    for seed, scores in zip(
        outcomes.predictor_seeds or range(len(outcomes.predictor_scores)), outcomes.predictor_scores
    ):
        groups = scores.shape[1] // probe
        if groups == 0:
            raise ValueError(f"a probe of {probe} needs at least {probe} recorded samples per problem")
        out[seed] = scores[:, : groups * probe].reshape(len(scores), groups, probe).mean(axis=2)
    return out


def probe_binner(outcomes: Outcomes, probe: int, *, num_levels: int = NUM_LEVELS) -> Binner:
    """Bins by the probe statistic: thresholds from the training problems' probe values (every
    seed and group), each problem graded at seed s binned by its probe values of the other
    seeds."""
    values = probe_values(outcomes, probe)
    seeds = graded_seeds(outcomes)
    sources = {s: _other_seeds_values(values, s) for s in seeds}
    leak_free = all(len(values) > 1 or s not in values for s in seeds)

    def binner(train: np.ndarray) -> Membership:
        thresholds = _thresholds(values, train, outcomes.problems, num_levels)
        weights = np.stack([_shares(sources[s], thresholds, num_levels) for s in seeds])
        return Membership(seeds, weights, thresholds, leak_free)

    return binner


def held_out_oracle_binner(outcomes: Outcomes, *, num_levels: int = NUM_LEVELS) -> Binner | None:
    """Bins by pass@1 over the other seeds' samples (gold answers, but never the graded
    samples); None with fewer than 2 seeds of sampling runs."""
    counts = outcomes.oracle_counts
    if counts is None or len(counts.seeds) < 2:
        return None
    seeds = graded_seeds(outcomes)
    rates = {s: counts.pass_rate_without(s) for s in seeds}
    if any(rate is None for rate in rates.values()):
        return None
    stats = {s: np.asarray(rate)[:, None] for s, rate in rates.items()}

    def binner(train: np.ndarray) -> Membership:
        thresholds = _thresholds(stats, train, outcomes.problems, num_levels)
        weights = np.stack([_shares(stats[s], thresholds, num_levels) for s in seeds])
        return Membership(seeds, weights, thresholds, leak_free=True)

    return binner


def fixed_binner(membership: Membership) -> Binner:
    """A binner that fits nothing: the same membership whatever the training problems."""
    return lambda train: membership


def levels_of(values: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """`bins.level_of` for an array: 1 + the number of thresholds above each value."""
    if np.isnan(values).any():
        raise ValueError("cannot bin a NaN statistic")
    return 1 + (values[..., None] < np.asarray(thresholds, dtype=float)).sum(axis=-1)


def _other_seeds_values(values: dict[int, np.ndarray], seed: int) -> np.ndarray:
    """(problems, values) the problems graded at `seed` are binned by: every probe group of
    the other seeds; with no other seed, the first probe of this one (what online sees)."""
    others = [v for s, v in values.items() if s != seed]
    return np.concatenate(others, axis=1) if others else values[seed][:, :1]


def _thresholds(
    values: dict[int, np.ndarray], train: np.ndarray, problems: Sequence[str], num_levels: int
) -> tuple[float, ...]:
    """Equal-count thresholds over every value of the training problems (ties broken by
    problem, seed and group, reproducibly)."""
    flat, keys = [], []
    for seed, array in values.items():
        for i in train:
            for g, value in enumerate(array[i]):
                flat.append(float(value))
                keys.append(f"{problems[i]}\x00{seed}\x00{g}")
    return fit_bins("predicted", flat, keys=keys, num_levels=num_levels).thresholds


def _shares(values: np.ndarray, thresholds: Sequence[float], num_levels: int) -> np.ndarray:
    """(problems, levels): the share of each problem's values in each level."""
    levels = levels_of(values, thresholds)
    return np.stack([(levels == level).mean(axis=1) for level in range(1, num_levels + 1)], axis=1)
