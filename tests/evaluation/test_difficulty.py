"""Tests for the difficulty quintiles (oracle pass@1 and model-predicted mean reward)."""

from __future__ import annotations

import hashlib
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


def test_heavy_ties_keep_five_levels_populated() -> None:
    # Issue #12 item 8: 45 of 100 problems never solved (pass@1 = 0) and 20 always solved.
    # One level per tie block would leave levels empty; quantile binning keeps 20 per level.
    values = [0.0] * 45 + [1.0] * 20 + [(i + 1) / 40 for i in range(35)]
    keys = [f"test/problem/{i}.json" for i in range(100)]
    levels = quantile_levels(values, keys=keys)
    assert Counter(levels) == {1: 20, 2: 20, 3: 20, 4: 20, 5: 20}
    # Order is still respected: a strictly easier problem never gets a harder level.
    for a in range(100):
        for b in range(100):
            if values[a] > values[b]:
                assert levels[a] <= levels[b]
    assert {lv for v, lv in zip(values, levels) if v == 1.0} == {1}
    assert {lv for v, lv in zip(values, levels) if v == 0.0} == {3, 4, 5}
    assert Counter(lv for v, lv in zip(values, levels) if v == 0.0) == {5: 20, 4: 20, 3: 5}


def test_tie_break_is_by_key_hash_not_input_order() -> None:
    values = [0.0] * 10
    keys = [f"p{i}" for i in range(10)]
    levels = quantile_levels(values, keys=keys)
    assert Counter(levels) == {1: 2, 2: 2, 3: 2, 4: 2, 5: 2}
    # The rule as documented: tied problems sorted by the SHA-256 of their key.
    by_hash = sorted(range(10), key=lambda i: hashlib.sha256(keys[i].encode()).hexdigest())
    assert [levels[i] for i in by_hash] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    # Without keys, ties keep input order.
    assert quantile_levels(values) == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]


def test_keys_must_match_values() -> None:
    with pytest.raises(ValueError, match="3 values but 2 keys"):
        quantile_levels([0.1, 0.2, 0.3], keys=["a", "b"])
    with pytest.raises(ValueError, match="unique"):
        quantile_levels([0.1, 0.2], keys=["a", "a"])


def test_all_tied_still_fills_the_levels() -> None:
    # Slot centres (2 pos + 1) / 14 of [0, 1] in fifths: levels 1, 2, 2, 3, 4, 4, 5.
    assert quantile_levels([0.4] * 7) == [1, 2, 2, 3, 4, 4, 5]


@pytest.mark.parametrize(
    ("n", "expected"),
    [(0, []), (1, [3]), (2, [2, 4]), (3, [1, 3, 5]), (4, [1, 2, 4, 5]), (5, [1, 2, 3, 4, 5])],
)
def test_fewer_than_five_problems_spread_symmetrically(n: int, expected: list[int]) -> None:
    values = [float(n - i) for i in range(n)]  # already easiest first
    assert quantile_levels(values) == expected


@pytest.mark.parametrize("n", range(1, 60))
def test_level_sizes_differ_by_at_most_one(n: int) -> None:
    rng = random.Random(n)
    values = [rng.choice([0.0, 0.25, 1.0]) for _ in range(n)]
    counts = Counter(quantile_levels(values, keys=[str(i) for i in range(n)]))
    if n >= 5:
        assert set(counts) == {1, 2, 3, 4, 5}
        assert max(counts.values()) - min(counts.values()) <= 1


def test_levels_are_order_independent_given_keys() -> None:
    rng = random.Random(3)
    values = [rng.choice([0.0, 0.25, 0.5, 0.75, 1.0]) for _ in range(37)]
    keys = [f"id{i}" for i in range(37)]
    levels = dict(zip(range(37), quantile_levels(values, keys=keys)))
    perm = list(range(37))
    rng.shuffle(perm)
    shuffled = quantile_levels([values[i] for i in perm], keys=[keys[i] for i in perm])
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
    # The two 0.8s tie: input order breaks it without keys, the key hash with keys.
    assert predicted_levels(rewards) == [1, 5, 3, 2, 4]
    first = hashlib.sha256(b"a").hexdigest() < hashlib.sha256(b"d").hexdigest()
    assert predicted_levels(rewards, keys=["a", "b", "c", "d", "e"]) == ([1, 5, 3, 2, 4] if first else [2, 5, 3, 1, 4])


def test_reversing_distinct_values_mirrors_levels() -> None:
    rng = random.Random(5)
    for n in range(1, 40):
        values = rng.sample(range(1000), n)
        easy_high = quantile_levels([float(v) for v in values])
        easy_low = quantile_levels([float(v) for v in values], higher_is_easier=False)
        assert easy_low == [6 - lv for lv in easy_high], values


def test_empty_samples_raise() -> None:
    with pytest.raises(ValueError, match="problem 1 has no samples"):
        pass_rates([[True], []])
    with pytest.raises(ValueError, match="problem 0 has no samples"):
        mean_rewards([[]])
    with pytest.raises(ValueError, match="non-finite"):
        mean_rewards([[0.5, math.inf]])
