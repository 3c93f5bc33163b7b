"""Fuzzing extraction, canonical keys and grading with random and adversarial strings.

Properties: nothing raises, every call returns within a bound, and the numeric keys agree with
exact arithmetic. Example counts are kept small so the file runs in well under a minute.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ttsearch.evaluation.canonical import canonical_form, group_answers
from ttsearch.evaluation.extraction import extract_answer
from ttsearch.evaluation.grading import Grader

# A hang guard, not a speed target (speed lives in benchmarks/bench_grading.py): these calls
# take milliseconds, a quadratic blow-up on 100k characters would take minutes, and a loaded
# 2-core CI machine must not make the test flaky.
HANG_BOUND_S = 5.0

FUZZ = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

# LaTeX-flavoured alphabet, so random strings hit the interesting code paths.
TOKENS = [
    "\\boxed", "\\boxed{", "\\fbox{", "{", "}", "\\{", "\\}", "$", "$$", "\\(", "\\)", "\\[", "\\]",
    "\\frac", "\\dfrac", "\\sqrt", "\\sqrt[3]", "\\pi", "\\text{", "\\left(", "\\right)", "^", "_",
    "\\circ", "\\%", "\\!", "\\,", "\\cup", "\\infty", "\\begin{pmatrix}", "\\end{pmatrix}", "&", "\\\\",
    "=", "x", "i", "e", "(", ")", "[", "]", ",", ";", ".", "-", "+", "*", "/", "!", " ", "\n",
    "0", "1", "2", "9", "10", "1000", "1,000", "and", "or", "final answer is", "I hope", "cm", "\\",
]  # fmt: skip
latexish = st.lists(st.sampled_from(TOKENS), max_size=40).map("".join)
any_text = st.one_of(st.text(max_size=200), latexish)

ADVERSARIAL = [
    "10^{10^{10}}",
    "9^{9^{9^{9}}}",
    "2^{2^{2^{2^{2^{2}}}}}",
    "(10^{100})!",
    "100000!",
    "\\frac{" * 200,
    "{" * 3000 + "}" * 10,
    "\\sqrt{" * 300 + "2",
    "\\boxed{" * 1000,
    "}" * 1000 + "\\boxed{1}",
    "\\begin{pmatrix}" * 50,
    "x^{x^{x^{x^{x^{x}}}}}",
    "e^{e^{e^{e^{100}}}}",
    "\\sum_{n=1}^{10^{10}} n!",
    "1" * 5000,
    "\\frac{1}{0}",
    "0^0",
    "\ud800",  # a lone surrogate
    "\x00\x01\x02",
    "$" * 500,
]


def _timed(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


@settings(FUZZ, max_examples=400)
@given(any_text)
def test_extract_answer_never_raises(text: str) -> None:
    result, elapsed = _timed(extract_answer, text)
    assert result is None or (isinstance(result, str) and result.strip() == result and result)
    assert elapsed < HANG_BOUND_S


@settings(FUZZ, max_examples=30)
@given(st.integers(0, 2**32), st.integers(10_000, 100_000))
def test_extract_answer_linear_on_long_brace_soup(seed: int, length: int) -> None:
    soup = random.Random(seed).choices(["\\boxed{", "{", "}", "\\{", "a", "\\boxed ", "final answer is"], k=length)
    result, elapsed = _timed(extract_answer, "".join(soup))
    assert result is None or isinstance(result, str)
    assert elapsed < HANG_BOUND_S


@settings(FUZZ, max_examples=400)
@given(any_text)
def test_canonical_form_never_raises_and_is_deterministic(text: str) -> None:
    canonical_form.cache_clear()  # type: ignore[attr-defined]
    key, elapsed = _timed(canonical_form, text)
    assert isinstance(key, str)
    assert elapsed < HANG_BOUND_S
    canonical_form.cache_clear()  # type: ignore[attr-defined]
    assert canonical_form(text) == key


@settings(FUZZ, max_examples=200)
@given(st.lists(st.one_of(st.none(), latexish), max_size=30))
def test_group_answers_partitions_the_non_empty_answers(answers: list[str | None]) -> None:
    groups = group_answers(answers)
    indices = sorted(i for members in groups.values() for i in members)
    assert indices == [i for i, a in enumerate(answers) if a is not None and canonical_form(a)]
    for key, members in groups.items():
        assert {canonical_form(answers[i]) for i in members} == {key}  # type: ignore[arg-type]


@settings(FUZZ, max_examples=300)
@given(st.fractions(max_denominator=10**6), st.fractions(max_denominator=10**6))
def test_numeric_keys_agree_with_exact_arithmetic(a: Fraction, b: Fraction) -> None:
    def spellings(q: Fraction) -> list[str]:
        sign = "-" if q < 0 else ""
        n, d = abs(q.numerator), q.denominator
        out = [f"{sign}\\frac{{{n}}}{{{d}}}", f"{sign}{n}/{d}", f"$\\dfrac{{{q.numerator}}}{{{d}}}$"]
        if d == 1:
            out += [f"{q.numerator}.0", f"{q.numerator:,}", f"\\boxed{{{q.numerator}}}"]
        return out

    keys_a = {canonical_form(s) for s in spellings(a)}
    keys_b = {canonical_form(s) for s in spellings(b)}
    assert len(keys_a) == 1 and len(keys_b) == 1
    assert (keys_a == keys_b) == (a == b)


@pytest.fixture(scope="module")
def grader() -> Iterator[Grader]:
    with Grader(timeout=30.0) as g:  # fuzzed calls pass FUZZ_TIMEOUT_S; health checks get slack
        yield g


FUZZ_TIMEOUT_S = 1.0
# A call may also pay for restarting a worker that the previous call had to kill (about a
# second, several on a loaded machine): the bound is "never hangs", not a latency target.
GRADE_BOUND_S = FUZZ_TIMEOUT_S + 20.0


@settings(FUZZ, max_examples=15)
@given(any_text, any_text)
def test_is_equivalent_never_raises_on_random_pairs(grader: Grader, gold: str, pred: str) -> None:
    verdict, elapsed = _timed(grader.is_equivalent, gold, pred, timeout=FUZZ_TIMEOUT_S)
    assert isinstance(verdict, bool)
    assert elapsed < GRADE_BOUND_S


@pytest.mark.parametrize("bad", ADVERSARIAL, ids=range(len(ADVERSARIAL)))
def test_is_equivalent_is_bounded_on_adversarial_input(grader: Grader, bad: str) -> None:
    for gold, pred in ((bad, bad + "+1"), ("2", bad), (bad, "x")):
        verdict, elapsed = _timed(grader.is_equivalent, gold, pred, timeout=FUZZ_TIMEOUT_S)
        assert isinstance(verdict, bool)
        assert elapsed < GRADE_BOUND_S
    assert extract_answer(bad) is None or isinstance(extract_answer(bad), str)
    assert isinstance(canonical_form(bad), str)
    # The grader is still healthy afterwards.
    assert grader.is_equivalent("(x+1)^2", "x^2+2x+1") is True
