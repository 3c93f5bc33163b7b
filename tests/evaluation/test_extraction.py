"""Tests for final-answer extraction (last box, "final answer is" fallback, MATH-500 solutions)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from ttsearch.evaluation.extraction import extract_answer, matching_braces
from ttsearch.evaluation.grading import is_equivalent


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so $x = \boxed{5}$.", "5"),
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"nested \boxed{\frac{\sqrt{3}}{2}} end", r"\frac{\sqrt{3}}{2}"),
        (r"set \boxed{\{1, 2\}}", r"\{1, 2\}"),  # escaped braces are not grouping braces
        (r"\boxed {7}", "7"),
        (r"\fbox{8}", "8"),
        (r"thus \boxed 5$.", "5"),
        (r"first \boxed{1}, then \boxed{2}", "2"),  # the last box wins
        (r"\boxed{  12  }", "12"),
        (r"\boxed{(1, 2)} and later \boxed{3", "(1, 2)"),  # truncated last box: last complete one
        (r"\boxed{} but \boxed{4}", "4"),
        (r"\boxed{4} then \boxed{}", "4"),  # an empty box is not an answer
        (r"\boxed{a}\boxedx{b}", "a"),  # \boxedx is another command
    ],
)
def test_boxed(text: str, expected: str) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Therefore, the final answer is: $26$. I hope it is correct.", "26"),
        ("Final Answer: The final answer is $\\frac{1}{2}$. I hope it is correct.", "\\frac{1}{2}"),
        ("The final answer is 42.", "42"),
        ("The FINAL ANSWER IS \\(3\\)\nmore text", "3"),
        ("Final answer: 7", "7"),
        ("the final answer is 1. Wait, final answer is 2.", "2"),  # the last statement wins
    ],
)
def test_final_answer_phrase(text: str, expected: str) -> None:
    assert extract_answer(text) == expected


def test_box_beats_phrase() -> None:
    assert extract_answer("\\boxed{3}. The final answer is 4. I hope it is correct.") == "3"


@pytest.mark.parametrize(
    "text",
    ["", "no answer here", "\\boxed{", "\\boxed{{}", "}}}{{{", "\\boxed", "final answer, we think", "\\boxed{}"],
)
def test_no_answer(text: str) -> None:
    assert extract_answer(text) is None


def test_matching_braces_skips_escapes_and_unmatched() -> None:
    text = r"{a\{b}}{"
    assert matching_braces(text) == {0: 5}


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "text",
    [
        "\\boxed{" * 200_000,  # every box unbalanced: must not rescan per box
        "{" * 500_000 + "\\boxed{1}",
        "\\boxed{" + "{" * 300_000 + "}" * 300_000 + "}",
        "final answer " * 100_000,
        "\\" * 1_000_001,
    ],
    ids=["unbalanced-boxes", "open-braces", "deep-nesting", "phrase-repeated", "backslashes"],
)
def test_linear_time_on_adversarial_input(text: str) -> None:
    start = time.perf_counter()
    result = extract_answer(text)
    assert time.perf_counter() - start < 3.0
    assert result is None or isinstance(result, str)


def test_math500_solutions_give_their_answers(shared_dir: Path) -> None:
    records = [json.loads(line) for line in (shared_dir / "data/math500.jsonl").read_text().splitlines()]
    assert len(records) == 500
    extracted = [extract_answer(r["solution"]) for r in records]
    # The README says the answer is the last box, verbatim; equivalence is the weaker promise.
    assert [r["unique_id"] for r, e in zip(records, extracted) if e != r["answer"]] == []
    assert all(is_equivalent(r["answer"], e) for r, e in zip(records, extracted) if e is not None)
