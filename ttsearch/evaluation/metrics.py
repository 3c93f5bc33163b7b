"""Scaling metrics: unbiased pass@k and accuracy@k of the selection methods.

`accuracy_at_k` answers "how accurate is method M with a budget of k samples?" for
k = 1, 2, 4, ... up to N: for every problem it selects an answer from the FIRST k
candidates (in sampling order, so one run of N samples yields the whole curve, as in the
blog and search-and-learn) and grades it against the gold answer. Several runs (seeds)
give a mean and a standard deviation per point; per-level and per-subject breakdowns
come from the same per-problem grades.

Grading (`grading.is_equivalent`, symbolic and slow) dominates the cost, so each distinct
canonical answer is graded once per gold answer (`GradeCache`), shared across k, methods
and seeds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Literal, Mapping, Sequence, get_args

import numpy as np

from ttsearch.evaluation.aggregation import SelectionMethod, candidate_keys, select_by_keys
from ttsearch.evaluation.grading import is_equivalent

# "pass" is the oracle row: unbiased pass@k over all N candidates of the run, i.e. the
# accuracy of a perfect verifier. The other three are the selection methods.
Method = Literal["majority", "naive", "weighted", "pass"]
METHODS: tuple[str, ...] = get_args(Method)
DEFAULT_METHODS: tuple[Method, ...] = ("majority", "naive", "weighted")

Grader = Callable[[str, str], bool]  # (gold, pred) -> equivalent?


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Codex paper): 1 - C(n-c, k) / C(n, k).

    n samples of which c are correct. Computed as 1 - prod_{i=n-c+1..n} (1 - k/i), which
    never forms the huge binomials and so stays exact-ish for n in the thousands.

    :raises ValueError: unless 0 <= c <= n and 1 <= k <= n (all ints).
    """
    for name, v in (("n", n), ("c", c), ("k", k)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"{name} must be an int, got {v!r}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 <= c <= n:
        raise ValueError(f"c must be in [0, n={n}], got {c}")
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, n={n}], got {k}")
    if n - c < k:
        # Every k-subset contains a correct sample.
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def default_ks(n: int) -> tuple[int, ...]:
    """1, 2, 4, ... up to n; n itself is appended when it is not a power of two."""
    if n < 1:
        raise ValueError(f"need at least one candidate, got n={n}")
    ks = [1 << p for p in range(n.bit_length()) if 1 << p <= n]
    if ks[-1] != n:
        ks.append(n)
    return tuple(ks)


@dataclass(frozen=True, slots=True)
class ProblemSamples:
    """One run's N candidates for one problem."""

    gold: str  # reference answer
    answers: tuple[str | None, ...]  # extracted answer per candidate, in sampling order
    rewards: tuple[float, ...]  # reduced PRM reward per candidate, same order
    unique_id: str = ""  # problem id; used by `level_of` overrides and for reporting
    subject: str | None = None
    level: int | None = None  # dataset level, or a difficulty bin (see `difficulty`)

    def __post_init__(self) -> None:
        if len(self.answers) != len(self.rewards):
            raise ValueError(
                f"problem {self.unique_id!r}: {len(self.answers)} answers but {len(self.rewards)} rewards"
            )


@dataclass(frozen=True, slots=True)
class MethodCurve:
    """Accuracy of one method at each budget k, over seeds."""

    method: str
    mean: tuple[float, ...]  # per k: mean over seeds of the fraction of problems solved
    std: tuple[float, ...]  # per k: sample std over seeds (ddof=1); 0.0 with one seed
    per_seed: tuple[tuple[float, ...], ...]  # [seed][k index]


@dataclass(frozen=True, slots=True)
class AccuracyTable:
    """Accuracy@k of several methods on one set of problems."""

    ks: tuple[int, ...]
    curves: tuple[MethodCurve, ...]  # one per method, in the requested order
    num_problems: int
    num_seeds: int

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(c.method for c in self.curves)

    def curve(self, method: str) -> MethodCurve:
        for c in self.curves:
            if c.method == method:
                return c
        raise KeyError(f"no method {method!r} in this table; have {self.methods}")

    def accuracy(self, method: str, k: int) -> float:
        """Mean accuracy of `method` at budget `k`."""
        return self.curve(method).mean[self.ks.index(k)]


@dataclass(frozen=True, slots=True)
class AccuracyReport:
    """Overall accuracy@k plus breakdowns by level and by subject."""

    overall: AccuracyTable
    by_level: Mapping[int, AccuracyTable]  # problems without a level are left out
    by_subject: Mapping[str, AccuracyTable]  # problems without a subject are left out


@dataclass(slots=True)
class GradeCache:
    """Memoises grading per (gold, canonical key): each distinct answer is graded once."""

    grader: Grader = is_equivalent
    _grades: dict[tuple[str, str], bool] = field(default_factory=dict)
    calls: int = 0  # how many times the grader actually ran

    def grade(self, gold: str, key: str, answer: str) -> bool:
        """Is `answer` (whose canonical key is `key`) equivalent to `gold`?"""
        hit = self._grades.get((gold, key))
        if hit is None:
            self.calls += 1
            # Any member of a key's group may be graded: equal keys mean equivalent answers.
            hit = bool(self.grader(gold, answer))
            self._grades[(gold, key)] = hit
        return hit


def grade_candidates(
    gold: str, answers: Sequence[str | None], *, cache: GradeCache | None = None
) -> list[bool]:
    """Correctness of every candidate (None answers are wrong), grading each answer group once."""
    cache = cache if cache is not None else GradeCache()
    keys = candidate_keys(answers)
    out = []
    for answer, key in zip(answers, keys):
        out.append(answer is not None and key is not None and cache.grade(gold, key, answer))
    return out


def accuracy_at_k(
    runs: Sequence[Sequence[ProblemSamples]],
    *,
    methods: Sequence[Method] = DEFAULT_METHODS,
    ks: Sequence[int] | None = None,
    level_of: Mapping[str, int] | None = None,
    grader: Grader | None = None,
    cache: GradeCache | None = None,
) -> AccuracyReport:
    """Accuracy@k of each method, for each run (seed), with level/subject breakdowns.

    :param runs: one sequence of problems per seed; a run's problems each hold that
        run's N candidates. Runs may differ in which problems they hold; a table's
        accuracy is per seed over the problems of that seed.
    :param ks: budgets; defaults to `default_ks` of the smallest N over all problems.
        Every problem needs at least max(ks) candidates.
    :param level_of: unique_id -> level overriding `ProblemSamples.level` (for example
        difficulty bins from `ttsearch.evaluation.difficulty`); ids it lacks keep theirs.
    :param grader: (gold, pred) -> bool; defaults to `grading.is_equivalent`.
    :param cache: share grades across calls (must use the same grader).
    """
    if not runs or any(len(run) == 0 for run in runs):
        raise ValueError("need at least one run, and every run needs at least one problem")
    methods = tuple(methods)
    if not methods:
        raise ValueError("need at least one method")
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"unknown method {m!r}; expected one of {METHODS}")
    if len(set(methods)) != len(methods):
        raise ValueError(f"duplicate methods in {methods}")
    min_n = min(len(p.answers) for run in runs for p in run)
    ks_t = default_ks(min_n) if ks is None else tuple(ks)
    if not ks_t or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks_t):
        raise ValueError(f"ks must be positive ints, got {ks_t}")
    if list(ks_t) != sorted(set(ks_t)):
        raise ValueError(f"ks must be strictly increasing, got {ks_t}")
    if ks_t[-1] > min_n:
        raise ValueError(f"k={ks_t[-1]} exceeds the smallest candidate count N={min_n}")
    if cache is None:
        cache = GradeCache(grader if grader is not None else is_equivalent)
    elif grader is not None and grader is not cache.grader:
        raise ValueError("pass either a grader or a cache built with it, not both")

    # scores[seed][problem] has shape (len(methods), len(ks)): 1.0 solved, 0.0 not
    # (fractional for "pass", an expectation).
    scores = [[_score_problem(p, methods, ks_t, cache) for p in run] for run in runs]

    def table(keep: Callable[[ProblemSamples], bool]) -> AccuracyTable | None:
        per_seed = []
        counts = []
        for run, run_scores in zip(runs, scores):
            picked = [s for p, s in zip(run, run_scores) if keep(p)]
            if picked:
                per_seed.append(np.mean(picked, axis=0))
                counts.append(len(picked))
        if not per_seed:
            return None
        return _make_table(methods, ks_t, np.stack(per_seed), max(counts))

    def level(p: ProblemSamples) -> int | None:
        if level_of is not None and p.unique_id in level_of:
            return level_of[p.unique_id]
        return p.level

    overall = table(lambda p: True)
    assert overall is not None
    levels = sorted({lv for run in runs for p in run if (lv := level(p)) is not None})
    subjects = sorted({p.subject for run in runs for p in run if p.subject is not None})
    by_level = {lv: t for lv in levels if (t := table(lambda p, lv=lv: level(p) == lv)) is not None}
    by_subject = {s: t for s in subjects if (t := table(lambda p, s=s: p.subject == s)) is not None}
    return AccuracyReport(overall=overall, by_level=by_level, by_subject=by_subject)


def _score_problem(
    p: ProblemSamples, methods: tuple[str, ...], ks: tuple[int, ...], cache: GradeCache
) -> np.ndarray:
    # Canonicalise once per candidate; every prefix, method (and the oracle) reuses the keys.
    keys = candidate_keys(p.answers)
    out = np.zeros((len(methods), len(ks)))
    for mi, method in enumerate(methods):
        if method == "pass":
            # The oracle uses all N of this run's candidates: unbiased over every k-subset.
            c = sum(
                1
                for a, key in zip(p.answers, keys)
                if a is not None and key is not None and cache.grade(p.gold, key, a)
            )
            out[mi] = [pass_at_k(len(p.answers), c, k) for k in ks]
            continue
        for ki, k in enumerate(ks):
            sel = select_by_keys(method, p.answers[:k], keys[:k], p.rewards[:k])  # type: ignore[arg-type]
            out[mi, ki] = sel is not None and cache.grade(p.gold, sel.key, sel.answer)
    return out


def _make_table(
    methods: tuple[str, ...], ks: tuple[int, ...], per_seed: np.ndarray, num_problems: int
) -> AccuracyTable:
    # per_seed: (seeds, methods, ks)
    seeds = per_seed.shape[0]
    mean = per_seed.mean(axis=0)
    std = per_seed.std(axis=0, ddof=1) if seeds > 1 else np.zeros_like(mean)
    curves = tuple(
        MethodCurve(
            method=m,
            mean=tuple(float(x) for x in mean[mi]),
            std=tuple(float(x) for x in std[mi]),
            per_seed=tuple(tuple(float(x) for x in per_seed[s, mi]) for s in range(seeds)),
        )
        for mi, m in enumerate(methods)
    )
    return AccuracyTable(ks=ks, curves=curves, num_problems=num_problems, num_seeds=seeds)

