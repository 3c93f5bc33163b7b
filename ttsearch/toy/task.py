"""A synthetic multi-step arithmetic task whose every solution step is checkable exactly.

Problems are running sums, "Compute 7 + 5 + 8 - 3 + 9.", solved in the format of the
real MATH prompts: one step per operation, steps separated by "\\n\\n", and a closing
sentence with the boxed answer:

    ## Step 1: 7 + 5 = 12

    ## Step 2: 12 + 8 = 20

    ...

    Therefore, the final answer is: $\\boxed{26}$. I hope it is correct.

Because a step's correctness is decidable (`check_steps`), sampled solutions can be
labelled step by step without a human or a rollout, which is what the toy PRM is trained
on. Difficulty levels 1-5 grow the number of terms and the operand size, so a small policy
solves easy problems and fails hard ones, as a real policy does on MATH levels.
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
    p_minus: float = 0.4  # chance of "-" where it keeps the running value non-negative


# Levels 1-2 stay within one-digit operands; 3-5 need multi-digit carries, which is
# where a small policy makes its mistakes.
LEVELS: dict[int, LevelSpec] = {
    1: LevelSpec(n_terms=3, low=1, high=9),
    2: LevelSpec(n_terms=4, low=1, high=9),
    3: LevelSpec(n_terms=4, low=10, high=49),
    4: LevelSpec(n_terms=5, low=10, high=99),
    5: LevelSpec(n_terms=6, low=10, high=99),
}


@dataclass(frozen=True, slots=True)
class Expression:
    """A parsed problem: terms[0] ops[0] terms[1] ops[1] ... (left to right)."""

    terms: tuple[int, ...]
    ops: tuple[str, ...]  # "+" or "-", one per term after the first

    def running_values(self) -> list[int]:
        """The value after each prefix: [terms[0], terms[0] op terms[1], ...]."""
        values = [self.terms[0]]
        for op, term in zip(self.ops, self.terms[1:]):
            values.append(values[-1] + term if op == "+" else values[-1] - term)
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
    iff all its steps are (see `prefix_correct` for PRM labels).
    """
    expr = parse_problem(problem)
    values = expr.running_values()
    n_ops = len(expr.ops)
    flags: list[bool] = []
    for k, step in enumerate(steps):
        text = step.strip()
        if k < n_ops:
            m = _STEP_RE.fullmatch(text)
            ok = m is not None and (
                int(m.group(1)) == k + 1
                and int(m.group(2)) == values[k]
                and m.group(3) == expr.ops[k]
                and int(m.group(4)) == expr.terms[k + 1]
                and int(m.group(5)) == values[k + 1]
            )
        elif k == n_ops:
            m = _FINAL_RE.fullmatch(text)
            ok = m is not None and int(m.group(1)) == values[-1]
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


def make_problems(
    n: int, seed: int, *, difficulty: int | Sequence[int] | None = None
) -> list[Problem]:
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
        text = "Compute " + " ".join(
            [str(expr.terms[0])] + [f"{op} {t}" for op, t in zip(expr.ops, expr.terms[1:])]
        ) + "."
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
    terms = [rng.randint(spec.low, spec.high)]
    ops: list[str] = []
    value = terms[0]
    for _ in range(spec.n_terms - 1):
        term = rng.randint(spec.low, spec.high)
        # Only subtract where the result stays >= 0: negative numbers would add a sign
        # token and a second kind of mistake without making the task more interesting.
        op = "-" if rng.random() < spec.p_minus and term <= value else "+"
        value = value + term if op == "+" else value - term
        terms.append(term)
        ops.append(op)
    return Expression(terms=tuple(terms), ops=tuple(ops))


def corrupt_steps(problem: Problem | str, rng: random.Random) -> tuple[list[str], int]:
    """A plausible wrong solution and the index of its first wrong step.

    Gold steps up to a random arithmetic step, which gets a slip a small model makes
    (a result off by 1 or 10, a wrong digit, or a misread operand), then every later step
    computed correctly from the wrong value, as a solver that trusts its own mistake.
    """
    expr = parse_problem(problem)
    n_ops = len(expr.ops)
    bad = rng.randrange(n_ops)
    value = expr.terms[0]
    steps: list[str] = []
    for k, (op, term) in enumerate(zip(expr.ops, expr.terms[1:])):
        shown = term
        result = value + term if op == "+" else value - term
        if k == bad:
            if rng.random() < 0.25:
                shown = _slip(term, rng)  # misread operand, right arithmetic on it
                result = value + shown if op == "+" else value - shown
            else:
                result = _slip(result, rng)
        steps.append(f"## Step {k + 1}: {value} {op} {shown} = {result}")
        value = result
    steps.append(final_step(value))
    return steps, bad


def _slip(n: int, rng: random.Random) -> int:
    """A different non-negative number close to `n` in the ways carries go wrong."""
    while True:
        kind = rng.random()
        if kind < 0.4:
            m = n + rng.choice([-1, 1])
        elif kind < 0.8:
            m = n + rng.choice([-10, 10])
        else:  # one digit replaced
            digits = list(str(n))
            i = rng.randrange(len(digits))
            digits[i] = str(rng.randrange(10))
            m = int("".join(digits))
        if m != n and m >= 0:
            return m
