"""Tests for the difficulty quintiles (oracle pass@1 and model-predicted mean reward)."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from ttsearch.evaluation.difficulty import (
    mean_rewards,
    oracle_levels,
    pass_rates,
    predicted_levels,
    quantile_levels,
)


def test_ten_distinct_values_two_per_level_highest_easiest() -> None:
    values = [0.05, 0.95, 0.15, 0.85, 0.25, 0.75, 0.35, 0.65, 0.45, 0.55]
    levels = quantile_levels(values)
    by_value = dict(zip(values, levels))
    assert [by_value[v] for v in sorted(values, reverse=True)] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]


def test_lower_is_easier_flips_the_order() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert quantile_levels(values) == [5, 4, 3, 2, 1]
    assert quantile_levels(values, higher_is_easier=False) == [1, 2, 3, 4, 5]


def test_500_distinct_values_give_100_per_level() -> None:
    rng = random.Random(0)
    values = rng.sample(range(10_000), 500)
    levels = quantile_levels([float(v) for v in values])
    assert Counter(levels) == {1: 100, 2: 100, 3: 100, 4: 100, 5: 100}
    # Every level-1 problem is easier (higher) than every level-2 problem, and so on.
    for lv in range(1, 5):
        assert min(v for v, l in zip(values, levels) if l == lv) > max(v for v, l in zip(values, levels) if l == lv + 1)


def test_ties_share_a_level_at_the_centre_of_their_block() -> None:
    # 10 problems: 4 unsolved (0.0) take sorted positions 6..9 -> centre 8 -> level 5;
    # 3 always solved (1.0) take positions 0..2 -> centre 1.5 -> level 1.
    values = [0.0, 1.0, 0.0, 0.5, 1.0, 0.0, 0.3, 0.0, 1.0, 0.6]
    levels = quantile_levels(values)
    assert {lv for v, lv in zip(values, levels) if v == 0.0} == {5}
    assert {lv for v, lv in zip(values, levels) if v == 1.0} == {1}
    # 0.6 at position 3 -> level 2; 0.5 at 4 -> level 3 (centre 4.5/10 in the third fifth); 0.3 at 5 -> 3.
    assert dict(zip(values, levels))[0.6] == 2
    assert dict(zip(values, levels))[0.5] == 3
    assert dict(zip(values, levels))[0.3] == 3


def test_all_tied_is_the_middle_level() -> None:
    assert quantile_levels([0.4] * 7) == [3] * 7


@pytest.mark.parametrize(
    ("n", "expected"),
    [(0, []), (1, [3]), (2, [2, 4]), (3, [1, 3, 5]), (4, [1, 2, 4, 5]), (5, [1, 2, 3, 4, 5])],
)
def test_fewer_than_five_problems_spread_symmetrically(n: int, expected: list[int]) -> None:
    values = [float(n - i) for i in range(n)]  # already easiest first
    assert quantile_levels(values) == expected


def test_levels_are_order_independent() -> None:
    rng = random.Random(3)
    values = [rng.choice([0.0, 0.25, 0.5, 0.75, 1.0]) for _ in range(37)]
    levels = dict(zip(range(37), quantile_levels(values)))
    perm = list(range(37))
    rng.shuffle(perm)
    shuffled = quantile_levels([values[i] for i in perm])
    assert [levels[i] for i in perm] == shuffled


def test_nan_and_bad_level_count_raise() -> None:
    with pytest.raises(ValueError, match="NaN"):
        quantile_levels([0.1, math.nan])
    with pytest.raises(ValueError, match="num_levels"):
        quantile_levels([0.1], num_levels=0)


def test_oracle_levels_from_correctness() -> None:
    correct = [
        [True, True, True, True],  # pass@1 1.0
        [False, False, False, False],  # 0.0
        [True, False, False, False],  # 0.25
        [True, True, False, False],  # 0.5
        [True, True, True, False],  # 0.75
    ]
    assert pass_rates(correct) == [1.0, 0.0, 0.25, 0.5, 0.75]
    assert oracle_levels(correct) == [1, 5, 4, 3, 2]


def test_predicted_levels_from_mean_reward() -> None:
    rewards = [[0.9, 0.7], [0.1, 0.3], [0.5, 0.5], [0.8, 0.8], [0.2, 0.4]]
    assert mean_rewards(rewards) == pytest.approx([0.8, 0.2, 0.5, 0.8, 0.3])
    # The two 0.8s share slots 0..1, whose centre 0.2 is exactly the level 1/2 boundary:
    # it goes outwards, to level 1 (mirroring how 0.8 would go to level 5).
    assert predicted_levels(rewards) == [1, 5, 3, 1, 4]


def test_reversing_the_order_mirrors_levels() -> None:
    rng = random.Random(5)
    for n in range(1, 40):
        values = [rng.choice([0.0, 0.1, 0.2, 0.5, 0.9, 1.0]) for _ in range(n)]
        easy_high = quantile_levels(values)
        easy_low = quantile_levels(values, higher_is_easier=False)
        assert easy_low == [6 - lv for lv in easy_high], values


def test_empty_samples_raise() -> None:
    with pytest.raises(ValueError, match="problem 1 has no samples"):
        pass_rates([[True], []])
    with pytest.raises(ValueError, match="problem 0 has no samples"):
        mean_rewards([[]])
    with pytest.raises(ValueError, match="non-finite"):
        mean_rewards([[0.5, math.inf]])
