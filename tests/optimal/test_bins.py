import math

import numpy as np
import pytest

from ttsearch.study.optimal.bins import fit_bins, level_of, level_thresholds


def test_ten_problems_two_per_level_and_thresholds_reproduce_them():
    values = [0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]
    bins = fit_bins("predicted", values)
    assert bins.levels.tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert bins.thresholds == pytest.approx((0.85, 0.65, 0.45, 0.25))
    assert [level_of(v, bins.thresholds) for v in values] == bins.levels.tolist()
    # New problems: on a threshold -> the easier side; above all -> 1; below all -> 5.
    t = bins.thresholds[0]
    assert level_of(t, bins.thresholds) == 1
    assert level_of(t - 1e-9, bins.thresholds) == 2
    assert level_of(2.0, bins.thresholds) == 1
    assert level_of(-1.0, bins.thresholds) == 5


def test_a_tie_split_across_levels_puts_new_equal_values_on_the_easier_side():
    values = [0.5, 0.5, 0.5, 0.5, 0.9]
    bins = fit_bins("oracle", values)  # equal-count quintiles: the tie is spread over 2..5
    assert bins.levels.tolist() == [2, 3, 4, 5, 1]
    assert bins.thresholds == pytest.approx((0.7, 0.5, 0.5, 0.5))
    assert level_of(0.9, bins.thresholds) == 1 and level_of(0.5, bins.thresholds) == 2
    keyed = fit_bins("oracle", values, keys=["a", "b", "c", "d", "e"])
    assert sorted(keyed.levels.tolist()) == [1, 2, 3, 4, 5] and keyed.levels[4] == 1


def test_one_problem_sits_in_the_middle_with_infinite_thresholds():
    bins = fit_bins("predicted", [0.3])
    assert bins.levels.tolist() == [3]
    assert level_thresholds(np.array([0.5, 0.5]), np.array([2, 4]))[1] == 0.5  # a split tie
    assert bins.thresholds == (math.inf, math.inf, -math.inf, -math.inf)
    assert level_of(0.99, bins.thresholds) == 3 and level_of(0.0, bins.thresholds) == 3


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="heuristic"):
        fit_bins("guess", [0.1])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="zero problems"):
        fit_bins("oracle", [])
    with pytest.raises(ValueError, match="NaN"):
        level_of(math.nan, (0.5,))
    with pytest.raises(ValueError, match="not monotone"):
        level_thresholds(np.array([0.1, 0.9]), np.array([1, 5]))
