"""Difficulty bins of the DeepMind compute-optimal paper (arXiv 2408.03314).

Problems are split into 5 quantile levels, 1 = easiest, by one of two statistics over a
problem's samples:

* oracle: pass@1, the fraction of samples graded correct against the gold answer;
* model-predicted: the mean PRM reward of the samples (no gold answer needed).

A higher pass rate or score means an easier problem.

Binning rule (`quantile_levels`), equal-count quantiles as in the paper: sort the n
problems easiest first and give each an equal slot of [0, 1]; a problem's level is the
fifth of [0, 1] that holds the centre of its slot, i.e. for 0-based sorted position pos,
level = 1 + floor(5 * (2 * pos + 1) / (2 * n)). With n >= 5 every level is populated
and level sizes differ by at most one; with fewer problems they spread symmetrically
(1 problem -> level 3; 2 -> 2, 4; 3 -> 1, 3, 5; 4 -> 1, 2, 4, 5).

Ties (issue #12 item 8): problems with equal values are ordered by a deterministic
tie-break, and may therefore land in different levels. With few samples ties are the
rule, not the exception (say 45% of problems never solved: pass@1 = 0); giving a whole
tie block one level would leave other levels empty and the bins no longer quintiles.
The tie-break key is the SHA-256 of the problem's key (its unique_id) when keys are
given: a reproducible order that does not depend on the input order and is uncorrelated
with how ids sort (MATH-500 ids sort by subject). Without keys ties keep input order.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

NUM_LEVELS = 5


def quantile_levels(
    values: Sequence[float],
    *,
    keys: Sequence[str] | None = None,
    higher_is_easier: bool = True,
    num_levels: int = NUM_LEVELS,
) -> list[int]:
    """Level (1 = easiest .. num_levels = hardest) of each value, in input order.

    :param keys: one id per value (unique_ids) for the tie-break; see the module docstring.
    :raises ValueError: on a NaN value, num_levels < 1, or keys of the wrong length or
        with duplicates.
    """
    if num_levels < 1:
        raise ValueError(f"num_levels must be >= 1, got {num_levels}")
    for i, v in enumerate(values):
        if math.isnan(v):
            raise ValueError(f"value {i} is NaN")
    n = len(values)
    if keys is not None:
        if len(keys) != n:
            raise ValueError(f"{n} values but {len(keys)} keys")
        if len(set(keys)) != n:
            raise ValueError("tie-break keys must be unique")
        tie_break: Sequence[object] = [hashlib.sha256(str(k).encode()).hexdigest() for k in keys]
    else:
        tie_break = range(n)
    sign = -1.0 if higher_is_easier else 1.0
    order = sorted(range(n), key=lambda i: (sign * values[i], tie_break[i]))  # easiest first
    levels = [0] * n
    for pos, i in enumerate(order):
        # Centre of slot pos, in units of one level width: num_levels * (2 pos + 1) / (2 n).
        levels[i] = 1 + (num_levels * (2 * pos + 1)) // (2 * n)
    return levels


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


def oracle_levels(
    correct: Sequence[Sequence[bool]], *, keys: Sequence[str] | None = None, num_levels: int = NUM_LEVELS
) -> list[int]:
    """Oracle difficulty: quantile levels of pass@1 (per-sample correctness per problem).

    Correctness can come from `metrics.grade_candidates`; `keys` (unique_ids) break ties.
    """
    return quantile_levels(pass_rates(correct), keys=keys, num_levels=num_levels)


def predicted_levels(
    rewards: Sequence[Sequence[float]], *, keys: Sequence[str] | None = None, num_levels: int = NUM_LEVELS
) -> list[int]:
    """Model-predicted difficulty: quantile levels of the mean PRM reward per problem."""
    return quantile_levels(mean_rewards(rewards), keys=keys, num_levels=num_levels)
