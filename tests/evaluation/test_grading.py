"""Tests for the answer-equivalence grader: verdicts by category, deadlines, threads, async, lifecycle."""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from ttsearch.errors import GradingError
from ttsearch.evaluation import grading
from ttsearch.evaluation.grading import Grader, is_equivalent, quick_verdict

# A comparison math-verify cannot finish in a second: a factorial of a million-digit number.
SLOW_GOLD, SLOW_PRED = "(10^{1000000})!", "1"

EQUIVALENT = [
    # fractions, decimals, mixed numbers
    ("\\frac{1}{2}", "0.5"),
    ("\\frac{1}{3}", "\\dfrac{2}{6}"),
    ("918\\frac{1}{2}", "918.5"),
    ("$\\frac{1}{2}$", "\\boxed{0.5}"),
    # radicals and pi
    ("\\sqrt{8}", "2\\sqrt{2}"),
    ("\\frac{1}{1+\\sqrt{2}}", "\\sqrt{2}-1"),
    ("\\frac{\\pi}{2}", "\\pi/2"),
    ("2\\pi", "\\pi \\cdot 2"),
    # degrees, units, percents, currency
    ("90^\\circ", "90"),
    ("10\\text{ cm}", "10"),
    ("50\\%", "50"),
    ("\\$18.90", "18.90"),
    # intervals, unions, sets, tuples
    ("[1, 3)", "[1,3)"),
    ("(-\\infty, 0] \\cup [1, \\infty)", "(-\\infty,0]\\cup[1,\\infty)"),
    ("\\{1,2\\}", "\\{2,1\\}"),
    ("(1,\\frac{9}{2})", "(1,4.5)"),
    # matrices
    ("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\begin{bmatrix}1 & 2\\\\ 3 & 4\\end{bmatrix}"),
    # complex numbers
    ("3+4i", "4i+3"),
    ("\\frac34i", "\\frac{3}{4}i"),
    # equations and expressions
    ("x=3", "3"),
    ("y = 2x + 3", "2x+3"),
    ("(x+1)^2", "x^2+2x+1"),
    ("x \\leq 5", "5 \\geq x"),
    # thousands separators and scientific notation
    ("1,000,000", "1000000"),
    ("1 000", "1000"),
    ("1.5\\times 10^{3}", "1500"),
    ("6.72 \\times 10^{-5}", "0.0000672"),
    # text answers
    ("\\text{(C)}", "C"),
    ("\\text{Evelyn}", "Evelyn"),
]

NOT_EQUIVALENT = [
    ("\\frac{1}{2}", "0.51"),
    ("2\\sqrt{2}", "2\\sqrt{3}"),
    ("\\pi", "3.14"),
    ("[1, 3)", "[1, 3]"),
    ("(1,2)", "(2,1)"),
    ("\\{1,2\\}", "\\{1,3\\}"),
    ("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\begin{pmatrix}1&2\\\\3&5\\end{pmatrix}"),
    ("3+4i", "3-4i"),
    ("x^2+2x+1", "x^3+2x+1"),
    ("7 = 11a+c", "11a+c"),
    ("10", "100"),
    ("5", "\\text{no solution}"),
    ("1.5\\times 10^{3}", "150"),
    ("2", "AZYUK2A"),
    ("x < 1", "x > -1"),
]


@pytest.fixture(scope="module")
def grader() -> Iterator[Grader]:
    with Grader(timeout=30.0) as g:  # generous: loaded CI machines; deadline tests pass their own
        yield g


@pytest.mark.parametrize(("gold", "pred"), EQUIVALENT)
def test_equivalent(grader: Grader, gold: str, pred: str) -> None:
    assert grader.is_equivalent(gold, pred) is True


@pytest.mark.parametrize(("gold", "pred"), NOT_EQUIVALENT)
def test_not_equivalent(grader: Grader, gold: str, pred: str) -> None:
    assert grader.is_equivalent(gold, pred) is False


@pytest.mark.parametrize(
    ("gold", "pred"),
    [("", "1"), ("1", ""), ("  ", "  "), (None, "1"), ("1", None), (1, 1), ("1", b"1"), ("}{", "\\frac{")],
)
def test_garbage_and_non_strings_are_not_equivalent(grader: Grader, gold: object, pred: object) -> None:
    assert grader.is_equivalent(gold, pred) is False  # type: ignore[arg-type]


def test_identical_strings_are_equivalent(grader: Grader) -> None:
    assert grader.is_equivalent("AZYUK", "  AZYUK ") is True


def test_quick_verdict_settles_cheap_cases_without_a_worker() -> None:
    assert quick_verdict("\\frac{1}{2}", "0.5") is True
    assert quick_verdict("3", "\\frac{7}{2}") is False  # two exact rationals
    assert quick_verdict("2\\sqrt{3}", "3\\sqrt{2}") is False  # exact, numerically different
    assert quick_verdict("28\\%", "0.28") is None  # percents/decimals: math-verify's call
    assert quick_verdict("(x+1)^2", "x^2+2x+1") is None


def test_overrunning_comparison_is_killed_and_the_worker_replaced() -> None:
    # Generous default deadline for the healthy calls (CI machines are loaded); short for the slow one.
    with Grader(timeout=30.0) as g:
        assert g.is_equivalent("(x+1)^2", "x^2+2x+1") is True  # the worker is up
        first_pid = g._workers[0]._proc.pid  # type: ignore[union-attr]
        start = time.perf_counter()
        assert g.is_equivalent(SLOW_GOLD, SLOW_PRED, timeout=0.5) is False
        assert time.perf_counter() - start < 5.0
        assert g._workers[0]._proc is None  # killed at the deadline, not answered
        assert g.is_equivalent("(x+1)^2", "x^2+2x+1") is True  # a fresh worker answers
        assert g._workers[0]._proc.pid != first_pid  # type: ignore[union-attr]


def test_per_call_timeout_overrides_default(grader: Grader) -> None:
    start = time.perf_counter()
    assert grader.is_equivalent(SLOW_GOLD, SLOW_PRED, timeout=0.3) is False
    assert time.perf_counter() - start < 5.0
    assert grader.is_equivalent("(x+1)^2", "x^2+2x+1") is True


def test_usable_from_threads() -> None:
    pairs = [*EQUIVALENT[:8], *NOT_EQUIVALENT[:8]] * 2
    expected = [p in EQUIVALENT for p in pairs]
    with Grader(workers=2) as g, ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda p: g.is_equivalent(*p), pairs))
    assert results == expected


async def test_async_grading_does_not_block_the_event_loop() -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    with Grader(timeout=30.0) as g:
        assert await g.ais_equivalent("(x+1)^2", "x^2+2x+1") is True
        task = asyncio.create_task(ticker())
        try:
            assert await g.ais_equivalent(SLOW_GOLD, SLOW_PRED, timeout=0.8) is False
        finally:
            task.cancel()
    assert ticks >= 10  # the loop kept running through the 0.8 s comparison (~80 ticks idle)


def test_close_stops_workers_and_rejects_use() -> None:
    g = Grader()
    assert g.is_equivalent("(x+1)^2", "x^2+2x+1") is True
    proc = g._workers[0]._proc
    assert proc is not None
    g.close()
    g.close()  # idempotent
    assert proc.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.kill(proc.pid, 0)
    with pytest.raises(RuntimeError, match="closed"):
        g.is_equivalent("1", "1")


def test_unclosed_grader_stops_its_worker_when_collected() -> None:
    g = Grader()
    assert g.is_equivalent("(x+1)^2", "x^2+2x+1") is True
    proc = g._workers[0]._proc
    assert proc is not None
    del g
    gc.collect()
    assert proc.returncode is not None


@pytest.mark.parametrize("kwargs", [{"timeout": 0}, {"timeout": -1.0}, {"workers": 0}])
def test_invalid_options(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Grader(**kwargs)  # type: ignore[arg-type]


def test_module_level_is_equivalent() -> None:
    assert is_equivalent("(x+1)^2", "x^2+2x+1") is True
    assert is_equivalent("\\frac{1}{2}", "0.5") is True
    assert is_equivalent("1", "2") is False


def test_a_grader_whose_worker_cannot_start_raises_instead_of_saying_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    # A worker that exits at once (a broken install, say): the answer is not "not
    # equivalent", it is ungraded. It used to come back False with a logged warning.
    monkeypatch.setattr(grading, "_WORKER_BOOT", "import sys; sys.exit(3)")
    with Grader() as g:
        with pytest.raises(GradingError, match=r"grader worker did not start \(exit status 3;"):
            g.is_equivalent("(x+1)^2", "x^2+2x+1")
        assert g.is_equivalent("\\frac{1}{2}", "0.5") is True  # decided in-process, no worker needed
        monkeypatch.undo()  # the grader works again: the next comparison starts a worker
        assert g.is_equivalent("(x+1)^2", "x^2+2x+1") is True
