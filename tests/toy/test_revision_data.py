"""Tests for the toy reviser's training data (`ttsearch.toy.revision`, the pool and batches
of `tools/toy_train_reviser.py`): edit distance, the choice and order of the previous
attempts, and the loss mask. Pure and fast: no model is loaded or trained."""

from __future__ import annotations

import random
from typing import Any

import pytest

from tools.toy_train_reviser import build_pool, draw_batches
from ttsearch.toy.revision import (
    IGNORE_INDEX,
    MAX_PREVIOUS_ATTEMPTS,
    RevisionTrajectory,
    closest_last,
    edit_distance,
    encode_toy_revision_prompt,
    encode_trajectory,
    make_trajectory,
)
from ttsearch.toy.task import final_step, gold_solution, make_problems
from ttsearch.toy.tokenizer import EOS, build_tokenizer


def _reference_distance(a: str, b: str) -> int:
    """Levenshtein distance by the textbook double loop."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        row = [i]
        for j, cb in enumerate(b, start=1):
            row.append(min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = row
    return previous[-1]


def test_edit_distance_known_values() -> None:
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == edit_distance("abc", "") == 3
    assert edit_distance("same", "same") == 0
    assert edit_distance("ab", "ba") == 2  # no transpositions


@pytest.mark.parametrize("seed", range(3))
def test_edit_distance_matches_the_textbook_algorithm(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(200):
        a = "".join(rng.choice("ab+1 ") for _ in range(rng.randint(0, 15)))
        b = "".join(rng.choice("ab+1 ") for _ in range(rng.randint(0, 15)))
        assert edit_distance(a, b) == edit_distance(b, a) == _reference_distance(a, b)


def _with_answer(solution: str, answer: int) -> str:
    """`solution` with its final step replaced (a wrong attempt at a known distance)."""
    return solution.rsplit("\n\n", 1)[0] + "\n\n" + final_step(answer)


def _wrong_answers(answer: int, n: int) -> list[int]:
    """`n` wrong answers whose edit distances from `answer` are 1, 2, ..., n (1, 11, 111, ...)."""
    digit = 1 if answer != 1 else 2
    return [int(str(digit) * length) for length in range(1, n + 1)]


def test_closest_last_keeps_the_k_closest_and_puts_the_closest_last() -> None:
    gold = "## Step 1: 1 + 2 = 3\n\n" + final_step(3)
    close, middle, far = (_with_answer(gold, answer) for answer in (4, 44, 4444))  # distances 1, 2, 4
    farthest = "## Step 1: nothing like the solution"
    assert closest_last([middle, farthest, close, far], gold, 4) == [farthest, far, middle, close]
    assert closest_last([middle, farthest, close, far], gold, 2) == [middle, close]
    assert closest_last([middle, farthest, close, far], gold, 0) == []
    # Duplicates count once; asking for more than there are gives all.
    assert closest_last([close, close, far], gold, 4) == [far, close]
    with pytest.raises(ValueError):
        closest_last([close], gold, -1)


def test_make_trajectory_takes_at_most_four_previous_attempts() -> None:
    problem = make_problems(2, seed=0)[1]
    gold = gold_solution(problem)
    wrong = [_with_answer(gold, answer) for answer in _wrong_answers(int(problem.answer), 6)]
    trajectory = make_trajectory(problem.problem, wrong, gold, n_previous=10)
    assert MAX_PREVIOUS_ATTEMPTS == 4
    assert len(trajectory.previous) == 4 and trajectory.target == gold
    distances = [edit_distance(text, gold) for text in trajectory.previous]
    assert distances == sorted(distances, reverse=True)  # the closest last
    assert set(trajectory.previous) == set(wrong[:4])  # the six are at increasing distances
    # Keeping the last k keeps the k closest, still the closest last.
    assert trajectory.keep_last(2).previous == trajectory.previous[2:]
    assert trajectory.keep_last(0).previous == ()
    assert trajectory.keep_last(9) == trajectory
    with pytest.raises(ValueError, match="target"):
        make_trajectory(problem.problem, [gold, *wrong], gold, n_previous=10)


def test_encoded_trajectory_has_loss_on_the_target_turn_only() -> None:
    tok: Any = build_tokenizer()
    problem = make_problems(3, seed=0)[2]
    gold = gold_solution(problem)
    trajectory = RevisionTrajectory(problem.problem, (_with_answer(gold, 1), _with_answer(gold, 2)), gold)
    ids, labels = encode_trajectory(tok, trajectory)
    prompt = encode_toy_revision_prompt(tok, problem.problem, trajectory.previous)
    target = tok.encode(gold, add_special_tokens=False) + [tok.convert_tokens_to_ids(EOS)]
    assert ids == prompt + target and len(labels) == len(ids)
    assert labels == [IGNORE_INDEX] * len(prompt) + target  # nothing on the wrong attempts
    assert tok.decode(ids[len(prompt) :]) == gold + EOS
    # The previous attempts are in the prompt, each as a finished assistant turn.
    assert tok.decode(prompt).count(EOS) == 2 + len(trajectory.previous)


def test_pool_uses_wrong_attempts_only_and_the_gold_target() -> None:
    problem = make_problems(2, seed=0)[1]
    gold = gold_solution(problem)
    right_but_odd = _with_answer("## Step 1: 0 + 0 = 0", int(problem.answer))  # right answer, wrong steps
    wrong = [_with_answer(gold, int(problem.answer) + d) for d in (1, 2)]
    (trajectory,) = build_pool([problem], [[*wrong, right_but_odd, gold]])
    assert trajectory.target == gold
    assert set(trajectory.previous) == set(wrong)  # the lucky right answer is not "wrong"
    (never_wrong,) = build_pool([problem], [[gold, gold]])
    assert never_wrong.previous == () and never_wrong.target == gold


def test_batches_mix_attempt_counts_and_group_lengths() -> None:
    tok: Any = build_tokenizer()
    problems = make_problems(20, seed=5)
    attempts = [[_with_answer(gold_solution(p), int(p.answer) + d) for d in range(1, 7)] for p in problems]
    pool = build_pool(problems, attempts)
    batches = draw_batches(pool, tok, random.Random(0), batch_size=8, groups=4)
    eot = tok.convert_tokens_to_ids(EOS)
    seen_turns = set()
    for _ in range(8):
        batch = next(batches)
        assert len(batch) == 8
        lengths = [len(ids) for ids, _ in batch]
        assert lengths == sorted(lengths)  # cut from one length-sorted group
        for ids, labels in batch:
            n_previous = ids.count(eot) - 3  # the system, user and target turns end in <|eot_id|> too
            assert 0 <= n_previous <= MAX_PREVIOUS_ATTEMPTS
            seen_turns.add(n_previous)
            first_label = next(i for i, lab in enumerate(labels) if lab != IGNORE_INDEX)
            assert labels[first_label:] == ids[first_label:] and labels[-1] == eot
    assert seen_turns == set(range(MAX_PREVIOUS_ATTEMPTS + 1))  # 0 to 4 previous attempts, all drawn
