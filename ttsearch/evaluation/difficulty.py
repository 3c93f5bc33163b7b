"""Difficulty bins of the DeepMind compute-optimal paper (arXiv 2408.03314).

Problems are split into 5 quantile levels, 1 = easiest, by one of two statistics over a
problem's samples:

* oracle: pass@1, the fraction of samples graded correct against the gold answer;
* model-predicted: the mean PRM reward of the samples (no gold answer needed).

A higher pass rate or score means an easier problem.

Binning rule (`quantile_levels`): sort the problems easiest first and give each of the n
problems an equal slot of [0, 1]; a problem's level is the fifth of [0, 1] that holds the
centre of its slot. Tied problems share the centre of their combined slots, so equal
values always get equal levels and a block of ties gets the level of its middle. A centre
exactly on a boundary (possible only for ties) goes to the outer level, away from the
middle one, so reversing the order mirrors the levels (level -> 6 - level). In integers,
for 0-based sorted positions first..last of a tie block, the centre is
x = num_levels * (first + last + 1) / (2 * n) and level = 1 + floor(x), except on a
boundary below the middle where level = x.

Consequences: with n a multiple of 5 and no ties every level gets n/5 problems; with
fewer than 5 problems some levels stay empty and the problems spread symmetrically
(1 problem -> level 3; 2 -> 2, 4; 3 -> 1, 3, 5; 4 -> 1, 2, 4, 5); if every problem ties,
all are level 3.
"""

from __future__ import annotations

import math
from typing import Sequence

NUM_LEVELS = 5


def quantile_levels(
    values: Sequence[float], *, higher_is_easier: bool = True, num_levels: int = NUM_LEVELS
) -> list[int]:
    """Level (1 = easiest .. num_levels = hardest) of each value, in input order.

    :raises ValueError: on a NaN value or num_levels < 1.
    """
    if num_levels < 1:
        raise ValueError(f"num_levels must be >= 1, got {num_levels}")
    for i, v in enumerate(values):
        if math.isnan(v):
            raise ValueError(f"value {i} is NaN")
    n = len(values)
    sign = -1.0 if higher_is_easier else 1.0
    order = sorted(range(n), key=lambda i: sign * values[i])  # easiest first
    levels = [0] * n
    first = 0
    while first < n:
        last = first
        while last + 1 < n and values[order[last + 1]] == values[order[first]]:
            last += 1
        level = _level_of_centre(num_levels * (first + last + 1), 2 * n, num_levels)
        for pos in range(first, last + 1):
            levels[order[pos]] = level
        first = last + 1
    return levels


def _level_of_centre(num: int, den: int, num_levels: int) -> int:
    """Level holding the centre num/den (in units of one level width), exact in integers."""
    whole, rest = divmod(num, den)
    if rest == 0 and 0 < whole and 2 * whole < num_levels:
        # On the boundary between levels `whole` and `whole + 1`, in the easier half:
        # go outwards (easier) to mirror the harder half, where floor already goes outwards.
        return whole
    # The centre is strictly below num_levels (the last slot's centre is < 1), so 1 + whole fits.
    return 1 + whole


def pass_rates(correct: Sequence[Sequence[bool]]) -> list[float]:
    """Oracle pass@1 per problem: the fraction of its samples that are correct."""
    out = []
    for i, c in enumerate(correct):
        if len(c) == 0:
            raise ValueError(f"problem {i} has no samples")
        out.append(sum(bool(x) for x in c) / len(c))
    return out


def mean_rewards(rewards: Sequence[Sequence[float]]) -> list[float]:
    """Model-predicted difficulty statistic per problem: the mean reward of its samples."""
    out = []
    for i, r in enumerate(rewards):
        if len(r) == 0:
            raise ValueError(f"problem {i} has no samples")
        if not all(math.isfinite(x) for x in r):
            raise ValueError(f"problem {i} has a non-finite reward")
        out.append(math.fsum(r) / len(r))
    return out


def oracle_levels(correct: Sequence[Sequence[bool]], *, num_levels: int = NUM_LEVELS) -> list[int]:
    """Oracle difficulty: quantile levels of pass@1 (per-sample correctness per problem).

    Correctness can come from `metrics.grade_candidates`.
    """
    return quantile_levels(pass_rates(correct), num_levels=num_levels)


def predicted_levels(rewards: Sequence[Sequence[float]], *, num_levels: int = NUM_LEVELS) -> list[int]:
    """Model-predicted difficulty: quantile levels of the mean PRM reward per problem."""
    return quantile_levels(mean_rewards(rewards), num_levels=num_levels)
