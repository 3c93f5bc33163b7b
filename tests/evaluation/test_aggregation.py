"""Tests for PRM score reductions and answer selection (majority, vanilla and weighted BoN)."""

from __future__ import annotations

import math
import random

import pytest

from ttsearch.evaluation import aggregation
from ttsearch.evaluation.aggregation import (
    Selection,
    best_of_n,
    candidate_keys,
    majority_vote,
    reduce_all,
    reduce_scores,
    select_answer,
    select_answer_from_steps,
    weighted_best_of_n,
)

# ---------------------------------------------------------------- reductions


@pytest.mark.parametrize(
    ("how", "expected"),
    [("last", 0.9), ("min", 0.2), ("prod", 0.5 * 0.2 * 0.9)],
)
def test_reduce_scores_on_concrete_list(how: str, expected: float) -> None:
    assert reduce_scores([0.5, 0.2, 0.9], how) == pytest.approx(expected)  # type: ignore[arg-type]


def test_reduce_scores_single_step_is_that_step_for_every_reduction() -> None:
    for how in ("last", "min", "prod"):
        assert reduce_scores([0.37], how) == pytest.approx(0.37)  # type: ignore[arg-type]


def test_reduce_scores_boundaries_are_allowed() -> None:
    assert reduce_scores([0.0, 1.0], "last") == 1.0
    assert reduce_scores([0.0, 1.0], "min") == 0.0
    assert reduce_scores([1.0, 1.0], "prod") == 1.0


def test_reduce_scores_empty_raises() -> None:
    with pytest.raises(ValueError, match="empty"):
        reduce_scores([], "last")


def test_reduce_scores_unknown_reduction_raises() -> None:
    with pytest.raises(ValueError, match="unknown reduction 'mean'"):
        reduce_scores([0.5], "mean")  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [1.2, -0.1, math.nan])
def test_reduce_scores_out_of_range_raises(bad: float) -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        reduce_scores([0.5, bad], "last")


def test_reduce_all_keeps_order() -> None:
    assert reduce_all([[0.1, 0.8], [0.9, 0.3]], "min") == pytest.approx([0.1, 0.3])


# ---------------------------------------------------------------- majority vote


def test_majority_vote_picks_most_frequent() -> None:
    sel = majority_vote(["3", "5", "5", "7", "5", "3"])
    assert sel is not None
    assert sel.answer == "5"
    assert sel.support == 3
    assert sel.score == 3.0
    assert sel.index == 1  # representative = first candidate with that answer


def test_majority_vote_tie_goes_to_earliest_group() -> None:
    # "9" and "4" both have two votes; "9" appeared first.
    assert majority_vote(["9", "4", "4", "9"]).answer == "9"  # type: ignore[union-attr]
    assert majority_vote(["4", "9", "9", "4"]).answer == "4"  # type: ignore[union-attr]


def test_majority_vote_groups_equivalent_forms() -> None:
    # \frac12, \frac{1}{2} and 0.5 are one answer; together they outvote "2" (two votes).
    answers = ["2", "\\frac12", "2", "0.5", "\\frac{1}{2}"]
    sel = majority_vote(answers)
    assert sel is not None
    assert sel.support == 3
    assert sel.answer == "\\frac12"  # as written by its first candidate
    assert sel.index == 1


def test_majority_vote_skips_missing_answers() -> None:
    sel = majority_vote([None, None, None, "8"])
    assert sel is not None and sel.answer == "8" and sel.index == 3
    assert majority_vote([None, None]) is None
    assert majority_vote([]) is None


# ---------------------------------------------------------------- best-of-N


def test_best_of_n_takes_highest_reward_candidate() -> None:
    sel = best_of_n(["1", "2", "3"], [0.2, 0.9, 0.5])
    assert isinstance(sel, Selection)
    assert (sel.answer, sel.index, sel.score, sel.support) == ("2", 1, 0.9, 1)


def test_best_of_n_ties_go_to_earliest_candidate() -> None:
    assert best_of_n(["1", "2", "3"], [0.5, 0.9, 0.9]).index == 1  # type: ignore[union-attr]


def test_best_of_n_ignores_candidates_without_answer() -> None:
    # The best-rewarded candidate has no answer: it cannot be chosen.
    sel = best_of_n([None, "2", "3"], [0.99, 0.1, 0.4])
    assert sel is not None and sel.answer == "3"
    assert best_of_n([None, None], [0.5, 0.7]) is None


def test_best_of_n_reports_support_of_its_answer() -> None:
    sel = best_of_n(["7", "0.5", "\\frac{1}{2}"], [0.1, 0.2, 0.95])
    assert sel is not None
    assert sel.answer == "\\frac{1}{2}" and sel.index == 2 and sel.support == 2


# ---------------------------------------------------------------- weighted best-of-N


def test_weighted_high_reward_minority_beats_majority() -> None:
    answers = ["12", "12", "12", "15", "15"]
    rewards = [0.2, 0.1, 0.3, 0.9, 0.8]
    # Majority says 12 (3 votes); summed reward says 15 (1.7 vs 0.6).
    assert majority_vote(answers).answer == "12"  # type: ignore[union-attr]
    sel = weighted_best_of_n(answers, rewards)
    assert sel is not None
    assert sel.answer == "15"
    assert sel.score == pytest.approx(1.7)
    assert sel.support == 2
    assert sel.index == 3


def test_weighted_many_mediocre_votes_beat_one_confident_candidate() -> None:
    # Where weighted and vanilla BoN disagree: vanilla takes the single 0.95.
    answers = ["a", "b", "b", "b"]
    rewards = [0.95, 0.4, 0.4, 0.4]
    assert best_of_n(answers, rewards).answer == "a"  # type: ignore[union-attr]
    assert weighted_best_of_n(answers, rewards).answer == "b"  # type: ignore[union-attr]


def test_weighted_sums_per_canonical_answer() -> None:
    # \frac12 and 0.5 are one group (0.3 + 0.3 = 0.6), which beats "3" (0.5).
    answers = ["\\frac12", "3", "0.5"]
    rewards = [0.3, 0.5, 0.3]
    sel = weighted_best_of_n(answers, rewards)
    assert sel is not None
    assert sel.answer == "\\frac12"
    assert sel.score == pytest.approx(0.6)
    assert sel.support == 2


def test_weighted_tie_is_exact_and_goes_to_earliest_group() -> None:
    # Same multiset of rewards in a different order: sums tie exactly (fsum), first group wins.
    # (Naive float addition gives x 0.3+0.2+0.1 = 0.6 but y 0.1+0.2+0.3 = 0.6000000000000001.)
    answers = ["x", "y", "x", "y", "x", "y"]
    rewards = [0.3, 0.1, 0.2, 0.2, 0.1, 0.3]
    assert weighted_best_of_n(answers, rewards).answer == "x"  # type: ignore[union-attr]
    assert weighted_best_of_n(answers[1:] + answers[:1], rewards[1:] + rewards[:1]).answer == "y"  # type: ignore[union-attr]


def test_weighted_none_when_no_answers() -> None:
    assert weighted_best_of_n([None, None, None], [0.1, 0.2, 0.3]) is None


# ---------------------------------------------------------------- dispatcher and validation


def test_select_answer_dispatches() -> None:
    answers = ["12", "12", "12", "15", "99"]
    rewards = [0.2, 0.1, 0.3, 0.9, 0.95]
    assert select_answer("majority", answers).answer == "12"  # type: ignore[union-attr]
    assert select_answer("naive", answers, rewards).answer == "99"  # type: ignore[union-attr]
    assert select_answer("weighted", answers, rewards).answer == "99"  # type: ignore[union-attr]


def test_select_answer_rejects_unknown_method_and_missing_rewards() -> None:
    with pytest.raises(ValueError, match="unknown selection method"):
        select_answer("maj", ["1"], [0.5])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs rewards"):
        select_answer("weighted", ["1"])


def test_length_mismatch_and_nan_reward_raise() -> None:
    with pytest.raises(ValueError, match="2 answers but 1 rewards"):
        best_of_n(["1", "2"], [0.5])
    with pytest.raises(ValueError, match="finite"):
        weighted_best_of_n(["1", "2"], [0.5, math.nan])


def test_select_from_steps_honours_the_reduction() -> None:
    # The reference implementation reduced with `last` whatever was configured.
    answers = ["A", "B"]
    steps = [[0.1, 0.9], [0.6, 0.7]]  # last: A 0.9 > B 0.7;  min: A 0.1 < B 0.6
    assert select_answer_from_steps("weighted", answers, steps, "last").answer == "A"  # type: ignore[union-attr]
    assert select_answer_from_steps("weighted", answers, steps, "min").answer == "B"  # type: ignore[union-attr]
    assert select_answer_from_steps("weighted", answers, steps, "prod").answer == "B"  # type: ignore[union-attr]
    assert select_answer_from_steps("naive", answers, steps, "min").answer == "B"  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="2 answers but 1 step-score"):
        select_answer_from_steps("naive", answers, steps[:1], "min")


# ---------------------------------------------------------------- grouping cost


def test_candidate_keys_match_groups() -> None:
    keys = candidate_keys(["\\frac12", None, "0.5", "3"])
    assert keys[1] is None
    assert keys[0] == keys[2] != keys[3]


def test_each_selection_groups_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = aggregation.group_answers

    def counting(answers):  # type: ignore[no-untyped-def]
        calls.append(len(answers))
        return real(answers)

    monkeypatch.setattr(aggregation, "group_answers", counting)
    rng = random.Random(0)
    answers = [str(rng.randrange(20)) for _ in range(256)]
    rewards = [rng.random() for _ in range(256)]
    for method in ("majority", "naive", "weighted"):
        select_answer(method, answers, rewards)  # type: ignore[arg-type]
    assert calls == [256, 256, 256]


def test_weighted_matches_brute_force_on_random_inputs() -> None:
    rng = random.Random(1)
    for _ in range(50):
        n = rng.randrange(1, 30)
        answers = [rng.choice(["1", "2", "3", "4", None]) for _ in range(n)]
        rewards = [round(rng.random(), 2) for _ in range(n)]
        totals: dict[str, float] = {}
        first: dict[str, int] = {}
        for i, (a, r) in enumerate(zip(answers, rewards)):
            if a is not None:
                totals[a] = totals.get(a, 0.0) + r
                first.setdefault(a, i)
        sel = weighted_best_of_n(answers, rewards)
        if not totals:
            assert sel is None
            continue
        assert sel is not None
        best = max(totals.values())
        assert totals[sel.answer] == pytest.approx(best)
        assert sel.index == first[sel.answer]
