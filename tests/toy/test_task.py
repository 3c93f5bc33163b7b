"""Tests for the toy arithmetic task: generator, gold solutions, step checker."""

from __future__ import annotations

import pytest

from ttsearch.evaluation.datasets import Problem
from ttsearch.evaluation.extraction import extract_answer
from ttsearch.toy.task import (
    HELD_OUT_SEED,
    LEVELS,
    check_steps,
    check_steps_locally,
    corrupt_steps,
    final_step,
    gold_solution,
    gold_steps,
    is_correct,
    make_problems,
    parse_problem,
    prefix_correct,
    split_steps,
)


def test_generator_is_deterministic_and_prefix_stable() -> None:
    a = make_problems(50, seed=7)
    assert a == make_problems(50, seed=7)
    assert make_problems(20, seed=7) == a[:20]
    assert a != make_problems(50, seed=8)
    assert len({p.unique_id for p in a}) == 50


def test_default_cycles_through_all_levels() -> None:
    problems = make_problems(10, seed=0)
    assert [p.level for p in problems] == [1, 2, 3, 4, 5, 1, 2, 3, 4, 5]
    assert all(isinstance(p, Problem) for p in problems)


@pytest.mark.parametrize("level", sorted(LEVELS))
def test_level_controls_terms_and_keeps_every_number_one_digit(level: int) -> None:
    spec = LEVELS[level]
    for p in make_problems(40, seed=3, difficulty=level):
        expr = parse_problem(p)
        assert p.level == level
        assert len(expr.terms) == spec.n_terms
        assert all(spec.low <= t <= spec.high for t in expr.terms)
        assert all(0 <= v <= spec.max_value <= 9 for v in expr.running_values())
        assert p.answer == str(expr.value)


def test_hard_levels_are_harder_than_easy_ones() -> None:
    easy = make_problems(30, seed=1, difficulty=1)
    hard = make_problems(30, seed=1, difficulty=5)
    assert max(len(gold_steps(p)) for p in easy) < min(len(gold_steps(p)) for p in hard)
    steps = [len(gold_steps(p)) for p in make_problems(5, seed=1)]  # levels 1..5
    assert steps == sorted(steps) and len(set(steps)) == 5


def test_difficulty_sequence_and_bad_levels() -> None:
    assert [p.level for p in make_problems(4, seed=0, difficulty=[2, 4])] == [2, 4, 2, 4]
    with pytest.raises(ValueError):
        make_problems(3, seed=0, difficulty=6)
    with pytest.raises(ValueError):
        make_problems(3, seed=0, difficulty=[])
    with pytest.raises(ValueError):
        make_problems(-1, seed=0)


def test_held_out_seed_differs_from_training_seeds() -> None:
    held_out = {p.problem for p in make_problems(200, HELD_OUT_SEED)}
    assert held_out != {p.problem for p in make_problems(200, 1)}


def test_gold_solution_format_and_values() -> None:
    text = "Compute 7 + 5 + 8 - 3 + 9."
    assert gold_solution(text) == (
        "## Step 1: 7 + 5 = 12\n\n"
        "## Step 2: 12 + 8 = 20\n\n"
        "## Step 3: 20 - 3 = 17\n\n"
        "## Step 4: 17 + 9 = 26\n\n"
        "Therefore, the final answer is: $\\boxed{26}$. I hope it is correct."
    )


@pytest.mark.parametrize("problem", make_problems(25, seed=11), ids=lambda p: p.unique_id)
def test_gold_solutions_check_out_and_extract(problem: Problem) -> None:
    assert problem.solution == gold_solution(problem)
    steps = split_steps(problem.solution)
    assert check_steps(problem, steps) == [True] * len(steps)
    assert extract_answer(problem.solution) == problem.answer
    assert is_correct(problem, problem.solution)


def test_parse_problem_rejects_other_text() -> None:
    with pytest.raises(ValueError):
        parse_problem("What is 2 + 2?")
    with pytest.raises(ValueError):
        parse_problem("Compute 7.")


STEPS = gold_steps("Compute 7 + 5 + 8 - 3 + 9.")


@pytest.mark.parametrize(
    ("index", "bad"),
    [
        (0, "## Step 1: 7 + 5 = 13"),  # wrong sum
        (1, "## Step 2: 12 + 9 = 21"),  # wrong operand (right arithmetic)
        (2, "## Step 3: 20 + 3 = 23"),  # wrong operation
        (1, "## Step 3: 12 + 8 = 20"),  # wrong step number
        (1, "## Step 2: 12+8=20"),  # wrong format
        (4, final_step(25)),  # wrong final answer
    ],
)
def test_checker_flags_the_corrupted_step(index: int, bad: str) -> None:
    steps = list(STEPS)
    steps[index] = bad
    flags = check_steps("Compute 7 + 5 + 8 - 3 + 9.", steps)
    assert flags == [k != index for k in range(len(steps))]


def test_checker_needs_the_true_previous_value() -> None:
    # Step 2 is right arithmetic but continues from step 1's wrong value: both are wrong,
    # and so is every later step, which only repeats the error's consequences.
    steps = [
        "## Step 1: 7 + 5 = 13",
        "## Step 2: 13 + 8 = 21",
        "## Step 3: 21 - 3 = 18",
        "## Step 4: 18 + 9 = 27",
        final_step(27),
    ]
    assert check_steps("Compute 7 + 5 + 8 - 3 + 9.", steps) == [False] * 5


def test_checker_position_of_final_step_and_extra_steps() -> None:
    text = "Compute 7 + 5 + 8 - 3 + 9."
    assert check_steps(text, [final_step(26)]) == [False]  # answer before the work
    assert check_steps(text, STEPS + [final_step(26)]) == [True] * 5 + [False]
    assert check_steps(text, [" " + STEPS[0] + "\n"]) == [True]  # whitespace ignored
    assert check_steps(text, []) == []


def test_prefix_correct_and_split_steps() -> None:
    assert prefix_correct([True, False, True]) == [True, False, False]
    assert prefix_correct([]) == []
    assert split_steps("a\n\nb\n\n") == ["a", "b"]


def test_is_correct_uses_the_final_answer() -> None:
    problem = make_problems(1, seed=0)[0]
    wrong = final_step(int(problem.answer) + 1)
    assert not is_correct(problem, wrong)
    assert is_correct(problem, final_step(problem.answer))
    assert not is_correct(problem, "no answer here")


@pytest.mark.parametrize("problem", make_problems(40, seed=21), ids=lambda p: p.unique_id)
def test_corrupted_solutions_go_wrong_exactly_at_the_reported_step(problem: Problem) -> None:
    import random

    steps, bad = corrupt_steps(problem, random.Random(problem.unique_id))
    assert len(steps) == len(gold_steps(problem))
    assert steps[:bad] == gold_steps(problem)[:bad]
    assert check_steps(problem, steps) == [k < bad for k in range(len(steps))]
    assert not is_correct(problem, "\n\n".join(steps))


@pytest.mark.parametrize("problem", make_problems(40, seed=22), ids=lambda p: p.unique_id)
def test_local_labels_flag_the_slip_once_and_agree_with_outcome(problem: Problem) -> None:
    import random

    steps, bad = corrupt_steps(problem, random.Random(problem.unique_id))
    # The slip is wrong; every later step computes correctly from it, and the final
    # sentence states the last result written, so only the slip is flagged.
    assert check_steps_locally(problem, steps) == [k != bad for k in range(len(steps))]
    assert check_steps_locally(problem, gold_steps(problem)) == [True] * len(gold_steps(problem))
    # A solution is correct iff every step is locally right.
    assert all(check_steps_locally(problem, steps)) == is_correct(problem, "\n\n".join(steps))


def test_local_labels_of_a_copied_wrong_value_and_extra_steps() -> None:
    text = "Compute 7 - 5 + 6 - 3 + 2."
    steps = ["## Step 1: 7 - 5 = 2", "## Step 2: 3 + 6 = 9", "## Step 3: 9 - 3 = 6", "## Step 4: 6 + 2 = 8"]
    # Step 2 starts from a value that step 1 did not write; later steps follow from it.
    assert check_steps_locally(text, steps + [final_step(8)]) == [True, False, True, True, True]
    assert check_steps_locally(text, steps + [final_step(7)]) == [True, False, True, True, False]
    assert check_steps_locally(text, steps + [final_step(8), "more"]) == [True, False, True, True, True, False]
    assert check_steps_locally(text, ["## Step 1: 7 + 5 = 12"]) == [False]  # wrong operation
    assert check_steps_locally(text, []) == []
