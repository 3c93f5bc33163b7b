"""Turning N scored candidates into one answer: PRM score reductions and answer selection.

Two jobs, both pure functions:

* `reduce_scores` turns a candidate's per-step PRM scores into one reward
  (`last`, `min` or `prod`).
* `majority_vote`, `best_of_n` and `weighted_best_of_n` pick one answer from N candidates,
  given each candidate's extracted answer (None when it has none) and, for the best-of-N
  variants, its reward. `select_answer` dispatches on a method name.

Answers are compared through `canonical.group_answers`: each answer is canonicalised once,
so selecting from N=256 candidates never compares answers pairwise.

Conventions shared by every selector:

* A candidate whose answer is None (or that `group_answers` leaves out) can never be
  chosen; when no candidate has an answer the result is None.
* Ties are broken towards the earliest candidate: between answer groups, the group whose
  first candidate comes first wins; within `best_of_n`, the earliest of the equally
  rewarded candidates wins. Sampling order is therefore part of the input.
* The chosen answer is reported as written by the group's representative: its first
  candidate (for `best_of_n`, the chosen candidate itself).

search-and-learn's weighted best-of-N always reduced with `last` whatever reduction was
configured; here selectors take already-reduced rewards, and `select_answer_from_steps`
reduces with exactly the reduction it is given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from ttsearch.evaluation.canonical import group_answers

Reduction = Literal["last", "min", "prod"]
SelectionMethod = Literal["majority", "naive", "weighted"]

REDUCTIONS: tuple[str, ...] = get_args(Reduction)
SELECTION_METHODS: tuple[str, ...] = get_args(SelectionMethod)


@dataclass(frozen=True, slots=True)
class Selection:
    """The answer a selector picked."""

    answer: str  # as written by the representative candidate
    key: str  # its canonical key (equal keys <=> same answer group)
    index: int  # index of the representative candidate in the input
    score: float  # votes (majority), reward (naive) or summed reward (weighted) of the winner
    support: int  # how many candidates share the chosen canonical answer


def reduce_scores(step_scores: Sequence[float], how: Reduction) -> float:
    """Reduce one candidate's per-step PRM scores (each in [0, 1]) to a single reward.

    :raises ValueError: on an empty score list, a score outside [0, 1] (or NaN), or an
        unknown reduction.
    """
    if how not in REDUCTIONS:
        raise ValueError(f"unknown reduction {how!r}; expected one of {REDUCTIONS}")
    if len(step_scores) == 0:
        raise ValueError("cannot reduce an empty list of step scores")
    for i, s in enumerate(step_scores):
        # `not (0 <= s <= 1)` also rejects NaN.
        if not (0.0 <= s <= 1.0):
            raise ValueError(f"step score {i} is {s!r}; PRM scores must lie in [0, 1]")
    if how == "last":
        return float(step_scores[-1])
    if how == "min":
        return float(min(step_scores))
    return float(math.prod(step_scores))


def reduce_all(step_scores: Sequence[Sequence[float]], how: Reduction) -> list[float]:
    """`reduce_scores` applied to every candidate, in order."""
    return [reduce_scores(scores, how) for scores in step_scores]


def candidate_keys(answers: Sequence[str | None]) -> list[str | None]:
    """Canonical key of each candidate (None for candidates without an answer).

    Canonicalises each answer once via `group_answers`; callers that select from several
    prefixes of the same candidates (accuracy@k) compute this once and reuse it.
    """
    keys: list[str | None] = [None] * len(answers)
    for key, indices in group_answers(answers).items():
        for i in indices:
            keys[i] = key
    return keys


def majority_vote(answers: Sequence[str | None]) -> Selection | None:
    """The most frequent canonical answer (self-consistency); ties go to the earliest group."""
    return select_by_keys("majority", answers, candidate_keys(answers), None)


def best_of_n(answers: Sequence[str | None], rewards: Sequence[float]) -> Selection | None:
    """Vanilla best-of-N: the answer of the highest-reward candidate that has an answer."""
    return select_by_keys("naive", answers, candidate_keys(answers), rewards)


def weighted_best_of_n(answers: Sequence[str | None], rewards: Sequence[float]) -> Selection | None:
    """Weighted best-of-N: sum rewards per canonical answer and pick the largest sum."""
    return select_by_keys("weighted", answers, candidate_keys(answers), rewards)


def select_answer(
    method: SelectionMethod,
    answers: Sequence[str | None],
    rewards: Sequence[float] | None = None,
) -> Selection | None:
    """Dispatch to the selector named `method` ("majority", "naive" or "weighted").

    `rewards` may be omitted for "majority" only.
    """
    return select_by_keys(method, answers, candidate_keys(answers), rewards)


def select_answer_from_steps(
    method: SelectionMethod,
    answers: Sequence[str | None],
    step_scores: Sequence[Sequence[float]],
    how: Reduction,
) -> Selection | None:
    """`select_answer` on raw per-step PRM scores, reduced with `how` (and only `how`)."""
    if len(step_scores) != len(answers):
        raise ValueError(f"{len(answers)} answers but {len(step_scores)} step-score lists")
    return select_answer(method, answers, reduce_all(step_scores, how))


def select_by_keys(
    method: SelectionMethod,
    answers: Sequence[str | None],
    keys: Sequence[str | None],
    rewards: Sequence[float] | None,
) -> Selection | None:
    """Select using precomputed canonical keys (see `candidate_keys`).

    The building block for the public selectors and for accuracy@k, which selects from
    prefixes `answers[:k]`, `keys[:k]`, `rewards[:k]` without canonicalising again.
    """
    if method not in SELECTION_METHODS:
        raise ValueError(f"unknown selection method {method!r}; expected one of {SELECTION_METHODS}")
    if len(keys) != len(answers):
        raise ValueError(f"{len(answers)} answers but {len(keys)} keys")
    if rewards is None:
        if method != "majority":
            raise ValueError(f"selection method {method!r} needs rewards")
        weights: Sequence[float] = [1.0] * len(answers)
    else:
        if len(rewards) != len(answers):
            raise ValueError(f"{len(answers)} answers but {len(rewards)} rewards")
        for i, r in enumerate(rewards):
            if not math.isfinite(r):
                raise ValueError(f"reward {i} is {r!r}; rewards must be finite")
        weights = rewards

    if method == "naive":
        return _best_single(answers, keys, weights)
    # Majority voting is weighted voting with every weight 1.
    return _best_group(answers, keys, [1.0] * len(answers) if method == "majority" else weights)


def _best_single(
    answers: Sequence[str | None], keys: Sequence[str | None], rewards: Sequence[float]
) -> Selection | None:
    best: int | None = None
    for i, key in enumerate(keys):
        # Strict ">" keeps the earliest of equally rewarded candidates.
        if key is not None and (best is None or rewards[i] > rewards[best]):
            best = i
    if best is None:
        return None
    chosen, answer = keys[best], answers[best]
    assert chosen is not None and answer is not None
    support = sum(1 for k in keys if k == chosen)
    return Selection(answer, chosen, best, float(rewards[best]), support)


def _best_group(
    answers: Sequence[str | None], keys: Sequence[str | None], weights: Sequence[float]
) -> Selection | None:
    members: dict[str, list[int]] = {}  # insertion order = order of first appearance
    for i, key in enumerate(keys):
        if key is not None:
            members.setdefault(key, []).append(i)
    best_key: str | None = None
    best_total = -math.inf
    for key, idx in members.items():
        # fsum is exact, so equal multisets of rewards tie exactly whatever their order.
        total = math.fsum(weights[i] for i in idx)
        if total > best_total:  # strict: earlier groups win ties
            best_key, best_total = key, total
    if best_key is None:
        return None
    first = members[best_key][0]
    answer = answers[first]
    assert answer is not None
    return Selection(answer, best_key, first, best_total, len(members[best_key]))
