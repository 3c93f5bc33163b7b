"""A synthetic multi-step arithmetic task whose every solution step is checkable exactly.

Problems are running sums of one-digit numbers whose running value stays in 0-9,
"Compute 7 - 5 + 6 - 3 + 2.", solved in the format of the real MATH prompts: one step per
operation, steps separated by "\\n\\n", and a closing sentence with the boxed answer:

    ## Step 1: 7 - 5 = 2

    ## Step 2: 2 + 6 = 8

    ...

    Therefore, the final answer is: $\\boxed{7}$. I hope it is correct.

Because a step's correctness is decidable (`check_steps`), sampled solutions can be
labelled step by step without a human or a rollout, which is what the toy PRM is trained
on. Difficulty levels 1-5 grow the number of terms (3 to 12), so a small policy solves easy
problems and fails hard ones, as a real policy does on MATH levels.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ttsearch.evaluation.datasets import Problem
from ttsearch.evaluation.extraction import extract_answer
from ttsearch.prompts import STEP_SEPARATOR

__all__ = [
    "HELD_OUT_SEED",
    "LEVELS",
    "SUBJECT",
    "Expression",
    "LevelSpec",
    "check_steps",
    "check_steps_locally",
    "corrupt_steps",
    "final_step",
    "gold_solution",
    "gold_steps",
    "is_correct",
    "make_problems",
    "parse_problem",
    "prefix_correct",
    "split_steps",
]

SUBJECT = "Toy arithmetic"
# Problems drawn with this seed are the held-out evaluation set: the training script
# never trains on a problem whose text appears among them.
HELD_OUT_SEED = 1_000_003


@dataclass(frozen=True, slots=True)
class LevelSpec:
    """How problems of one difficulty level are drawn."""

    n_terms: int  # numbers in the expression; a solution has n_terms - 1 arithmetic steps
    low: int  # smallest operand
    high: int  # largest operand (inclusive)
    p_minus: float = 0.5  # chance of "-" where both operations keep the value in range
    max_value: int = 9  # the running value stays in [0, max_value]


# Difficulty is the number of steps. Every number is one digit (the running value stays in
# 0-9), so each step is a one-token fact "A op B = C" at fixed offsets: a tiny PRM learns
# to check it. With multi-digit operands (carries) a 4-layer PRM did not learn to check a
# sum (runs of up to ~15 CPU minutes, several designs), so it ranked problems by
# difficulty, not the solutions of one problem (measured; see the notes of issue #4). The
# policy still errs, on the facts it has not settled and more often the longer the problem.
LEVELS: dict[int, LevelSpec] = {
    1: LevelSpec(n_terms=3, low=1, high=9),
    2: LevelSpec(n_terms=5, low=1, high=9),
    3: LevelSpec(n_terms=7, low=1, high=9),
    4: LevelSpec(n_terms=9, low=1, high=9),
    5: LevelSpec(n_terms=12, low=1, high=9),
}


def _apply(value: int, op: str, term: int) -> int:
    """`value op term` for op "+" or "-"."""
    return value + term if op == "+" else value - term


@dataclass(frozen=True, slots=True)
class Expression:
    """A parsed problem: terms[0] ops[0] terms[1] ops[1] ... (left to right)."""

    terms: tuple[int, ...]
    ops: tuple[str, ...]  # "+" or "-", one per term after the first

    def running_values(self) -> list[int]:
        """The value after each prefix: [terms[0], terms[0] op terms[1], ...]."""
        values = [self.terms[0]]
        for op, term in zip(self.ops, self.terms[1:]):
            values.append(_apply(values[-1], op, term))
        return values

    @property
    def value(self) -> int:
        return self.running_values()[-1]


_PROBLEM_RE = re.compile(r"Compute (\d+(?: [+-] \d+)+)\.")
_STEP_RE = re.compile(r"## Step (\d+): (-?\d+) ([+-]) (\d+) = (-?\d+)")
_FINAL_TEMPLATE = "Therefore, the final answer is: $\\boxed{{{}}}$. I hope it is correct."
_FINAL_RE = re.compile(r"Therefore, the final answer is: \$\\boxed\{(-?\d+)\}\$\. I hope it is correct\.")


def parse_problem(problem: Problem | str) -> Expression:
    """The expression of a toy problem (a `Problem` or its text).

    :raises ValueError: when the text is not a toy problem.
    """
    text = problem.problem if isinstance(problem, Problem) else problem
    m = _PROBLEM_RE.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"not a toy arithmetic problem: {text!r}")
    tokens = m.group(1).split(" ")
    return Expression(terms=tuple(int(t) for t in tokens[::2]), ops=tuple(tokens[1::2]))


def final_step(answer: int | str) -> str:
    """The closing step that states `answer`."""
    return _FINAL_TEMPLATE.format(answer)


def gold_steps(problem: Problem | str) -> list[str]:
    """The correct solution's steps (arithmetic steps, then the final-answer step)."""
    expr = parse_problem(problem)
    values = expr.running_values()
    steps = [
        f"## Step {k + 1}: {values[k]} {op} {term} = {values[k + 1]}"
        for k, (op, term) in enumerate(zip(expr.ops, expr.terms[1:]))
    ]
    steps.append(final_step(values[-1]))
    return steps


def gold_solution(problem: Problem | str) -> str:
    """The correct solution text: `gold_steps` joined by "\\n\\n" (no trailing separator)."""
    return STEP_SEPARATOR.join(gold_steps(problem))


def split_steps(solution: str) -> list[str]:
    """A solution's steps: split on "\\n\\n", dropping empty pieces (a trailing separator)."""
    return [s for s in solution.split(STEP_SEPARATOR) if s.strip()]


def check_steps(problem: Problem | str, steps: Sequence[str]) -> list[bool]:
    """Per step: is it correct on its own terms?

    Arithmetic step k (1-based) is correct iff it reads "## Step k: A op B = C" where A is
    the true running value before it (it continues from the right value), op and B are the
    problem's k-th operation, and C = A op B. The step after the last arithmetic step is
    correct iff it is the final-answer sentence with the true answer; any further step is
    wrong. Surrounding whitespace is ignored. A step that repeats an earlier wrong value
    correctly is still wrong (A is compared with the true value), so a solution is correct
    iff all its steps are (`prefix_correct` turns these into Math-Shepherd prefix labels;
    the toy PRM learns `check_steps_locally` instead).
    """
    return _judge_steps(problem, steps, from_written=False)


def check_steps_locally(problem: Problem | str, steps: Sequence[str]) -> list[bool]:
    """Per step: is it right given the solution's own previous result?

    Like `check_steps`, except that arithmetic step k must start from the result the
    solution wrote in step k-1 (the first from the problem's first term), and the
    final-answer step must state the last result written. A wrong step is flagged once,
    and the steps after it that compute correctly from its wrong value are not, so a
    solution is correct iff every step is: the minimum over steps of a PRM trained on
    these labels scores the whole solution. The toy PRM learns these labels because each
    one is decided by the step itself (and the problem), not by the whole history.
    """
    return _judge_steps(problem, steps, from_written=True)


def _judge_steps(problem: Problem | str, steps: Sequence[str], *, from_written: bool) -> list[bool]:
    """`check_steps` (each step starts from the true running value) or, with
    `from_written`, `check_steps_locally` (from the result the solution last wrote)."""
    expr = parse_problem(problem)
    values = expr.running_values()
    n_ops = len(expr.ops)
    start = expr.terms[0]  # the value arithmetic step k must start from
    flags: list[bool] = []
    for k, step in enumerate(steps):
        text = step.strip()
        if not from_written:
            start = values[min(k, n_ops)]
        if k < n_ops:
            m = _STEP_RE.fullmatch(text)
            op, term = expr.ops[k], expr.terms[k + 1]
            ok = m is not None and (
                int(m.group(1)) == k + 1
                and int(m.group(2)) == start
                and m.group(3) == op
                and int(m.group(4)) == term
                and int(m.group(5)) == _apply(start, op, term)
            )
            if from_written and m is not None:
                start = int(m.group(5))
        elif k == n_ops:
            m = _FINAL_RE.fullmatch(text)
            ok = m is not None and int(m.group(1)) == start
        else:
            ok = False
        flags.append(ok)
    return flags


def prefix_correct(flags: Sequence[bool]) -> list[bool]:
    """Math-Shepherd-style labels: step k is good iff it and every earlier step are correct."""
    labels: list[bool] = []
    ok = True
    for flag in flags:
        ok = ok and flag
        labels.append(ok)
    return labels


def is_correct(problem: Problem, solution: str) -> bool:
    """Outcome correctness: the extracted final answer equals the gold answer (as an integer)."""
    answer = extract_answer(solution)
    if answer is None:
        return False
    try:
        return int(answer) == int(problem.answer)
    except ValueError:
        return False


def make_problems(n: int, seed: int, *, difficulty: int | Sequence[int] | None = None) -> list[Problem]:
    """`n` toy problems, deterministic in (`seed`, `difficulty`).

    `difficulty`: a level 1-5 for all problems, a sequence of levels to cycle through, or
    None for all five levels in turn (1, 2, 3, 4, 5, 1, ...). Problem i depends only on
    (seed, i, its level), so `make_problems(m, s)` is a prefix of `make_problems(n, s)`
    for m < n. Each `Problem` carries its gold solution.

    :raises ValueError: on a negative `n` or an unknown level.
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    if difficulty is None:
        levels: Sequence[int] = sorted(LEVELS)
    elif isinstance(difficulty, int):
        levels = [difficulty]
    else:
        levels = list(difficulty)
    if not levels or any(level not in LEVELS for level in levels):
        raise ValueError(f"difficulty levels must be in {sorted(LEVELS)}, got {difficulty!r}")
    problems = []
    for i in range(n):
        level = levels[i % len(levels)]
        # A string seed is hashed (SHA-512) by `random`, so this is stable across runs
        # and Python versions, unlike hash().
        rng = random.Random(f"ttsearch-toy/{seed}/{i}/{level}")
        expr = _draw(rng, LEVELS[level])
        text = (
            "Compute " + " ".join([str(expr.terms[0])] + [f"{op} {t}" for op, t in zip(expr.ops, expr.terms[1:])]) + "."
        )
        problems.append(
            Problem(
                problem=text,
                answer=str(expr.value),
                subject=SUBJECT,
                level=level,
                unique_id=f"toy/seed{seed}/level{level}/{i}",
                solution=gold_solution(text),
            )
        )
    return problems


def _draw(rng: random.Random, spec: LevelSpec) -> Expression:
    value = rng.randint(spec.low, min(spec.high, spec.max_value))
    terms = [value]
    ops: list[str] = []
    for _ in range(spec.n_terms - 1):
        # A random walk that never leaves [0, max_value]: no negative numbers (a sign token
        # would add a second kind of mistake) and no second digit.
        can_add = value + spec.low <= spec.max_value
        can_subtract = value - spec.low >= 0
        op = "-" if can_subtract and (not can_add or rng.random() < spec.p_minus) else "+"
        room = spec.max_value - value if op == "+" else value
        term = rng.randint(spec.low, min(spec.high, room))
        value = _apply(value, op, term)
        terms.append(term)
        ops.append(op)
    return Expression(terms=tuple(terms), ops=tuple(ops))


def corrupt_steps(problem: Problem | str, rng: random.Random) -> tuple[list[str], int]:
    """A plausible wrong solution and the index of its first wrong step.

    Gold steps up to a random arithmetic step, which gets a slip of the kinds the toy
    policy makes (measured on its samples: mostly taking the wrong operation or number
    from the problem, e.g. a neighbouring one), then every later step computed correctly
    from the wrong value, as a solver that trusts its own mistake.
    """
    expr = parse_problem(problem)
    n_ops = len(expr.ops)
    pairs = list(zip(expr.ops, expr.terms[1:]))
    bad = rng.randrange(n_ops)
    value = expr.terms[0]
    steps: list[str] = []
    for k, (op, term) in enumerate(pairs):
        if k == bad:
            op, term, result = _wrong_step(pairs, k, value, rng)
        else:
            result = _apply(value, op, term)
        steps.append(f"## Step {k + 1}: {value} {op} {term} = {result}")
        value = result
    steps.append(final_step(value))
    return steps, bad


def _wrong_step(pairs: Sequence[tuple[str, int]], k: int, value: int, rng: random.Random) -> tuple[str, int, int]:
    """(op, operand, result) of a wrong step k starting from `value` (which is right)."""
    op, term = pairs[k]
    right = _apply(value, op, term)
    while True:
        kind = rng.random()
        if kind < 0.5 and len(pairs) > 1:  # another step's operation and number, usually a neighbour's
            j = k + rng.choice([-2, -1, 1, 1, 2]) if rng.random() < 0.8 else rng.randrange(len(pairs))
            if not 0 <= j < len(pairs):
                continue
            op, term = pairs[j]
        elif kind < 0.65:  # the right operation, a misread number
            op, term = pairs[k][0], _slip(pairs[k][1], rng)
            term = max(term, 1)
        elif kind < 0.75:  # the number with the other operation
            op, term = ("-" if pairs[k][0] == "+" else "+"), pairs[k][1]
        else:  # the right operation and number, a wrong result
            op, term = pairs[k]
            return op, term, _slip(right, rng)
        result = _apply(value, op, term)
        if result != right and result >= 0:
            return op, term, result


def _slip(n: int, rng: random.Random) -> int:
    """A different non-negative number close to `n`, as a model that half-knows a fact errs."""
    while True:
        kind = rng.random()
        if kind < 0.5:
            m = n + rng.choice([-1, 1])
        elif kind < 0.7:
            m = n + rng.choice([-2, 2])
        elif kind < 0.8:
            m = n + rng.choice([-10, 10])
        else:  # one digit replaced
            digits = list(str(n))
            i = rng.randrange(len(digits))
            digits[i] = str(rng.randrange(10))
            m = int("".join(digits))
        if m != n and m >= 0:
            return m
