"""Tests for pass@k and accuracy@k (first-k selection, seeds, breakdowns, grading cache)."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest

from ttsearch.evaluation import aggregation
from ttsearch.evaluation.metrics import (
    GradeCache,
    ProblemSamples,
    accuracy_at_k,
    default_ks,
    grade_candidates,
    pass_at_k,
)

# ---------------------------------------------------------------- pass@k


def test_pass_at_k_matches_binomial_formula() -> None:
    for n in range(1, 16):
        for c in range(n + 1):
            for k in range(1, n + 1):
                expected = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12), (n, c, k)


def test_pass_at_k_matches_subset_enumeration() -> None:
    # The definition itself: the fraction of k-subsets holding at least one correct sample.
    for n in range(1, 8):
        for c in range(n + 1):
            samples = [True] * c + [False] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(samples, k))
                expected = sum(any(s) for s in subsets) / len(subsets)
                assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_simple_values() -> None:
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(10, 8, 3) == 1.0  # n - c < k: every 3-subset has a correct sample


@pytest.mark.parametrize(("c", "k"), [(1, 1), (1, 256), (3, 64), (100, 16), (1000, 2), (2000, 1024), (5, 2040)])
def test_pass_at_k_stable_for_n_2048(c: int, k: int) -> None:
    n = 2048
    exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
    got = pass_at_k(n, c, k)
    assert 0.0 <= got <= 1.0
    assert got == pytest.approx(float(exact), rel=1e-10, abs=1e-13)


def test_pass_at_k_monotone_in_k_and_c() -> None:
    n = 2048
    vals = [pass_at_k(n, 10, k) for k in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)]
    assert vals == sorted(vals)
    assert [pass_at_k(n, c, 8) for c in range(0, 50)] == sorted(pass_at_k(n, c, 8) for c in range(0, 50))


@pytest.mark.parametrize(
    ("n", "c", "k", "match"),
    [
        (0, 0, 1, "n must be >= 1"),
        (5, 6, 1, "c must be in"),
        (5, -1, 1, "c must be in"),
        (5, 2, 0, "k must be in"),
        (5, 2, 6, "k must be in"),
        (5.0, 2, 1, "n must be an int"),
        (5, True, 1, "c must be an int"),
    ],
)
def test_pass_at_k_rejects_bad_inputs(n: int, c: int, k: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        pass_at_k(n, c, k)


def test_default_ks() -> None:
    assert default_ks(1) == (1,)
    assert default_ks(256) == (1, 2, 4, 8, 16, 32, 64, 128, 256)
    assert default_ks(5) == (1, 2, 4, 5)
    with pytest.raises(ValueError):
        default_ks(0)


# ---------------------------------------------------------------- accuracy@k


def exact(gold: str, pred: str) -> bool:
    return gold == pred


# Gold "5", eight samples in sampling order. At budget k the accuracy is the mean over the
# 8 // k disjoint groups of k consecutive samples:
#   k=2: (5,3) (3,5) (5,3) (3,3); k=4: (5,3,3,5) (5,3,3,3); k=8: all, where "3" wins 5 to 3.
PROBLEM_A = ProblemSamples(
    gold="5",
    answers=("5", "3", "3", "5", "5", "3", "3", "3"),
    rewards=(0.1, 0.6, 0.1, 0.9, 0.8, 0.1, 0.1, 0.1),
    unique_id="a",
    subject="Algebra",
    level=1,
)
# Never solved: no answer, or a wrong one.
PROBLEM_B = ProblemSamples(
    gold="7",
    answers=(None, "1", None, "2", "2", None, "1", "1"),
    rewards=(0.9, 0.5, 0.9, 0.5, 0.5, 0.9, 0.5, 0.5),
    unique_id="b",
    subject="Geometry",
    level=3,
)
# Solved by everything: all candidates say "4".
PROBLEM_C = ProblemSamples(gold="4", answers=("4",) * 8, rewards=(0.5,) * 8, unique_id="c", subject="Algebra", level=3)

A_MAJORITY = (3 / 8, 2 / 4, 1 / 2, 0.0)  # ties go to the earliest group: (5,3) -> 5, (5,3,3,5) -> 5
A_NAIVE = (3 / 8, 2 / 4, 2 / 2, 1.0)  # k=2: 3(.6) 5(.9) 5(.8) 3; k=4: 5(.9), 5(.8)
A_WEIGHTED = (3 / 8, 2 / 4, 2 / 2, 1.0)  # k=4: 5 1.0 vs 3 .7, 5 .8 vs 3 .3; k=8: 5 1.8 vs 3 1.0


def test_sampling_budgets_average_disjoint_groups() -> None:
    report = accuracy_at_k([[PROBLEM_A]], grader=exact, methods=("majority", "naive", "weighted"))
    t = report.overall
    assert t.ks == (1, 2, 4, 8)
    assert t.curve("majority").mean == pytest.approx(A_MAJORITY)
    assert t.curve("naive").mean == pytest.approx(A_NAIVE)
    assert t.curve("weighted").mean == pytest.approx(A_WEIGHTED)
    assert t.num_problems == 1 and t.num_seeds == 1
    assert t.curve("naive").std == (0.0, 0.0, 0.0, 0.0)


def test_leftover_samples_past_the_last_whole_group_are_unused() -> None:
    # 5 samples at k=2: groups (5,3) (3,5); the fifth ("5") is unused.
    p = ProblemSamples(gold="5", answers=("5", "3", "3", "5", "5"), rewards=(0.1, 0.6, 0.1, 0.9, 0.8))
    t = accuracy_at_k([[p]], grader=exact, ks=(2, 4, 5)).overall
    assert t.curve("naive").mean == pytest.approx((0.5, 1.0, 1.0))
    assert t.curve("majority").mean == pytest.approx((0.5, 1.0, 1.0))  # (5,3,3,5) tie -> 5; 5 of 5: 3 to 2


def _beam(answers: tuple[str | None, ...], n: int, uid: str = "s") -> ProblemSamples:
    # A stepwise run: candidates sorted by score, as beam search stores them.
    rewards = tuple(0.9 - 0.1 * i for i in range(len(answers)))
    return ProblemSamples(gold="5", answers=answers, rewards=rewards, unique_id=uid, kind="stepwise", n=n)


def test_stepwise_runs_are_reported_at_their_n_only() -> None:
    # Issue #12 item 1: the first k of one N=4 beam search is not beam search at N=k.
    beam = _beam(("3", "5", "5", "5"), n=4)
    t = accuracy_at_k([[beam]], grader=exact).overall
    assert t.ks == (4,)
    assert t.curve("majority").mean == (1.0,)
    assert t.curve("naive").mean == (0.0,)  # the best-scored beam says "3"
    with pytest.raises(ValueError, match=r"budget k=2: stepwise runs at N = \[4\]"):
        accuracy_at_k([[beam]], grader=exact, ks=(2, 4))


def test_dvts_budget_is_its_n_not_its_candidate_count() -> None:
    # DVTS at N=16 returns 1..M finished leaves per subtree: 3 and 5 candidates here. The
    # budget is still 16 (the old default shrank ks to the smallest count: 1, 2).
    p1 = _beam(("5", "5", "3"), n=16, uid="p1")
    p2 = _beam(("3", "5", "5", "5", "5"), n=16, uid="p2")
    t = accuracy_at_k([[p1, p2]], grader=exact).overall
    assert t.ks == (16,)
    assert t.curve("majority").mean == (1.0,)
    assert t.curve("naive").mean == (0.5,)
    assert t.curve("weighted").mean == (1.0,)  # p2: "5" 0.8+0.7+0.6+0.5 beats "3" 0.9


def test_stepwise_runs_at_several_n_fill_their_own_columns() -> None:
    at4 = _beam(("3", "5", "5", "3"), n=4)
    at16 = _beam(("5",) * 16, n=16)
    t = accuracy_at_k([[at4], [at16]], grader=exact, methods=("naive", "pass")).overall
    assert t.ks == (4, 16)
    assert t.curve("naive").mean == (0.0, 1.0)
    assert t.curve("pass").mean == (1.0, 1.0)  # any of the run's candidates correct
    assert t.curve("naive").std == (0.0, 0.0)  # one seed per column
    per_seed = t.curve("naive").per_seed
    assert per_seed[0][0] == 0.0 and np.isnan(per_seed[0][1])
    assert np.isnan(per_seed[1][0]) and per_seed[1][1] == 1.0


def test_accuracy_averages_problems_and_breaks_down_by_level_and_subject() -> None:
    report = accuracy_at_k([[PROBLEM_A, PROBLEM_B, PROBLEM_C]], grader=exact)
    assert report.overall.curve("majority").mean == pytest.approx([(a + 0 + 1) / 3 for a in A_MAJORITY])
    assert report.overall.num_problems == 3
    assert sorted(report.by_level) == [1, 3]
    assert report.by_level[1].curve("majority").mean == pytest.approx(A_MAJORITY)
    assert report.by_level[3].curve("majority").mean == (0.5, 0.5, 0.5, 0.5)
    assert report.by_level[3].num_problems == 2
    assert sorted(report.by_subject) == ["Algebra", "Geometry"]
    assert report.by_subject["Geometry"].curve("weighted").mean == (0.0, 0.0, 0.0, 0.0)
    assert report.by_subject["Algebra"].curve("naive").mean == pytest.approx([(a + 1) / 2 for a in A_NAIVE])
    assert report.overall.accuracy("naive", 4) == pytest.approx(2 / 3)


def test_level_of_overrides_dataset_levels() -> None:
    report = accuracy_at_k([[PROBLEM_A, PROBLEM_B, PROBLEM_C]], grader=exact, level_of={"a": 5, "c": 5})
    assert sorted(report.by_level) == [3, 5]  # b keeps its own level 3
    assert report.by_level[5].num_problems == 2
    assert report.by_level[3].curve("majority").mean == (0.0, 0.0, 0.0, 0.0)


def test_accuracy_mean_and_std_over_seeds() -> None:
    # Seed 2: the same problem A with a different sample order ("3" first).
    a2 = ProblemSamples(
        gold="5",
        answers=("3", "5", "5", "3", "5", "3", "3", "3"),
        rewards=(0.2,) * 8,
        unique_id="a",
    )
    report = accuracy_at_k([[PROBLEM_A], [a2]], grader=exact, methods=("majority",))
    curve = report.overall.curve("majority")
    seed1 = list(A_MAJORITY)
    seed2 = [3 / 8, 2 / 4, 0.0, 0.0]  # k=2: (3,5)->3 (5,3)->5 (5,3)->5 (3,3); k=4: 3 wins both
    assert [list(s) for s in curve.per_seed] == [pytest.approx(seed1), pytest.approx(seed2)]
    assert curve.mean == pytest.approx(np.mean([seed1, seed2], axis=0))
    assert curve.std == pytest.approx(np.std([seed1, seed2], axis=0, ddof=1))
    assert report.overall.num_seeds == 2


def test_oracle_pass_row_uses_all_candidates() -> None:
    report = accuracy_at_k([[PROBLEM_A, PROBLEM_B]], grader=exact, methods=("pass", "majority"))
    curve = report.overall.curve("pass")
    # A: 3 of 8 correct; B: none.
    expected = [(pass_at_k(8, 3, k) + 0.0) / 2 for k in (1, 2, 4, 8)]
    assert curve.mean == pytest.approx(expected)
    assert report.overall.methods == ("pass", "majority")


def test_default_ks_do_not_shrink_to_the_smallest_candidate_count() -> None:
    short = ProblemSamples(gold="4", answers=("4", "4", "1"), rewards=(0.1, 0.1, 0.9))
    t = accuracy_at_k([[PROBLEM_A, short]], grader=exact).overall
    assert t.ks == (1, 2, 3, 4, 8)  # each budget over the problems that have it
    # k=3: A's groups (5,3,3) -> 3 and (5,5,3) -> 5 (.9); short -> "1" (.9). k=4, 8: A only.
    assert t.curve("naive").mean == pytest.approx(((3 / 8 + 2 / 3) / 2, (0.5 + 1.0) / 2, 0.25, 1.0, 1.0))
    t = accuracy_at_k([[PROBLEM_A]], grader=exact, ks=(2, 8)).overall
    assert t.curve("majority").mean == (0.5, 0.0)
    with pytest.raises(ValueError, match="no run can be reported at budget k=16: sampling runs with up to 8"):
        accuracy_at_k([[PROBLEM_A, short]], grader=exact, ks=(1, 16))
    with pytest.raises(ValueError, match="strictly increasing"):
        accuracy_at_k([[PROBLEM_A]], grader=exact, ks=(4, 2))


def test_accuracy_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown method"):
        accuracy_at_k([[PROBLEM_A]], grader=exact, methods=("maj",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one run"):
        accuracy_at_k([], grader=exact)
    with pytest.raises(ValueError, match="at least one run"):
        accuracy_at_k([[]], grader=exact)
    with pytest.raises(ValueError, match="3 answers but 2 rewards"):
        ProblemSamples(gold="1", answers=("1", "2", "3"), rewards=(0.1, 0.2))


def test_each_distinct_answer_is_graded_once_per_gold(monkeypatch: pytest.MonkeyPatch) -> None:
    graded: list[tuple[str, str]] = []

    def counting(gold: str, pred: str) -> bool:
        graded.append((gold, pred))
        return gold == pred

    groupings: list[int] = []
    real = aggregation.group_answers

    def counting_groups(answers):  # type: ignore[no-untyped-def]
        groupings.append(len(answers))
        return real(answers)

    monkeypatch.setattr(aggregation, "group_answers", counting_groups)
    a_seed2 = ProblemSamples(gold="5", answers=PROBLEM_A.answers[::-1], rewards=PROBLEM_A.rewards[::-1])
    cache = GradeCache(counting)
    accuracy_at_k(
        [[PROBLEM_A, PROBLEM_B], [a_seed2, PROBLEM_B]], cache=cache, methods=("pass", "majority", "naive", "weighted")
    )
    # Gold "5": answers "5" and "3"; gold "7": answers "1" and "2". Each graded exactly once,
    # across every k, method and seed.
    assert sorted(graded) == [("5", "3"), ("5", "5"), ("7", "1"), ("7", "2")]
    assert cache.calls == 4
    # One canonicalisation pass per (problem, seed), not one per k or method.
    assert groupings == [8, 8, 8, 8]


def test_cache_and_grader_together_are_rejected() -> None:
    with pytest.raises(ValueError, match="not both"):
        accuracy_at_k([[PROBLEM_A]], grader=exact, cache=GradeCache(lambda g, p: True))


def test_grade_candidates() -> None:
    assert grade_candidates("5", ["5", None, "3", "5"], cache=GradeCache(exact)) == [True, False, False, True]


def test_accuracy_with_the_real_grader() -> None:
    # Default grader and real grouping: 0.5, \frac12 and \frac{1}{2} all match the gold.
    p = ProblemSamples(
        gold="\\frac{1}{2}",
        answers=("3", "0.5", "\\frac12", "\\frac{1}{2}"),
        rewards=(0.1, 0.9, 0.2, 0.3),
    )
    report = accuracy_at_k([[p]])
    # k=2 groups: ("3", "0.5") -> tie to "3" / naive and weighted "0.5"; ("\frac12", "\frac{1}{2}") right.
    assert report.overall.curve("majority").mean == (0.75, 0.5, 1.0)
    assert report.overall.curve("naive").mean == (0.75, 1.0, 1.0)
    assert report.overall.curve("weighted").mean == (0.75, 1.0, 1.0)
