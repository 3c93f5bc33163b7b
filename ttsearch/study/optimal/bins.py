"""Difficulty bins for compute-optimal scaling, with thresholds a new problem can be binned by.

The levels are `ttsearch.evaluation.difficulty.quantile_levels` of a per-problem statistic
(1 = easiest .. 5 = hardest): oracle pass@1 (needs the gold answer) or the model-predicted
mean PRM score (needs none). For the model-predicted heuristic the bins must also apply to
problems never seen, so each boundary between level j and j + 1 becomes a threshold: the
midpoint between the lowest statistic at levels <= j and the highest at levels > j. A
value >= thresholds[0] is level 1, below thresholds[-1] is level 5. Every fitted problem
gets its own level back, except where `quantile_levels` split a block of equal values
across a boundary (its tie-break keeps the levels equal-sized): the threshold is then that
value, and a new problem with exactly that value goes to the easier side. A side with no
problem gives an infinite threshold: nothing lands on the empty side.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ttsearch.evaluation.difficulty import NUM_LEVELS, quantile_levels

# oracle: pass@1 over the same samples the runs are graded on (the paper's upper reference);
# oracle_held_out: pass@1 over another seed's samples; predicted: the PRM probe statistic.
Heuristic = Literal["oracle", "oracle_held_out", "predicted"]
HEURISTICS: tuple[Heuristic, ...] = ("oracle", "oracle_held_out", "predicted")


@dataclass(frozen=True, slots=True)
class DifficultyBins:
    """Each problem's level under one heuristic."""

    heuristic: Heuristic
    values: np.ndarray  # the statistic per problem (higher = easier)
    levels: np.ndarray  # 1 = easiest .. num_levels = hardest, per problem
    thresholds: tuple[float, ...]  # num_levels - 1 decreasing boundaries (see the module doc)

    @property
    def num_levels(self) -> int:
        return len(self.thresholds) + 1


def fit_bins(
    heuristic: Heuristic,
    values: Sequence[float] | np.ndarray,
    *,
    keys: Sequence[str] | None = None,
    num_levels: int = NUM_LEVELS,
) -> DifficultyBins:
    """Quantile levels of `values` (higher = easier) and the thresholds that reproduce them.

    :param keys: the problems' unique_ids, which break ties (see `quantile_levels`).
    """
    if heuristic not in HEURISTICS:
        raise ValueError(f"heuristic must be one of {HEURISTICS}, got {heuristic!r}")
    array = np.asarray(values, dtype=float)
    if array.size == 0:
        raise ValueError("cannot bin zero problems")
    levels = np.asarray(quantile_levels(array.tolist(), keys=keys, num_levels=num_levels), dtype=int)
    return DifficultyBins(heuristic, array, levels, level_thresholds(array, levels, num_levels=num_levels))


def level_thresholds(values: np.ndarray, levels: np.ndarray, *, num_levels: int = NUM_LEVELS) -> tuple[float, ...]:
    """Boundaries between consecutive levels: midpoints between the two sides' nearest values."""
    out = []
    for j in range(1, num_levels):
        easier = values[levels <= j]
        harder = values[levels > j]
        if easier.size == 0:
            out.append(math.inf)
        elif harder.size == 0:
            out.append(-math.inf)
        else:
            low, high = float(easier.min()), float(harder.max())
            if low < high:
                raise ValueError(f"levels are not monotone in the values at boundary {j}")
            out.append((low + high) / 2)
    return tuple(out)


def level_of(value: float, thresholds: Sequence[float]) -> int:
    """The level of a new problem whose statistic is `value`."""
    if math.isnan(value):
        raise ValueError("cannot bin a NaN statistic")
    return 1 + sum(1 for t in thresholds if value < t)
