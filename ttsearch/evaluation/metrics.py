"""Scaling metrics: unbiased pass@k and accuracy@k of the selection methods.

`accuracy_at_k` answers "how accurate is method M with a budget of k?" in the paper's
sense of a budget (issue #12 item 1), which depends on how the candidates were produced:

* "sampling" runs (majority voting, best-of-N) draw N independent samples, stored in
  sampling order. Any k <= N samples are as good as a fresh run at budget k, so one run
  of N gives the whole curve: the accuracy at k is the mean over the N // k disjoint
  groups of k consecutive candidates (a lower-variance estimate than the first k alone;
  candidates past the last whole group are unused).
* "stepwise" runs (beam search, DVTS, lookahead) return candidates of ONE search at
  budget N (beam search sorted by score, DVTS 1..M leaves per subtree): a subset of them
  is not a search at a smaller budget, so they are reported at their N only.

Several runs (seeds) give a mean and a standard deviation per point; a run only counts
at the budgets its problems have (a table may mix stepwise runs at N=4 and N=16).
Per-level and per-subject breakdowns come from the same per-problem grades.

Grading (`grading.is_equivalent`, symbolic and slow) dominates the cost, so each distinct
canonical answer is graded once per gold answer (`GradeCache`), shared across k, methods
and seeds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np

from ttsearch.evaluation.aggregation import candidate_keys, select_by_keys
from ttsearch.evaluation.grading import is_equivalent

# "pass" is the oracle row: unbiased pass@k over all N candidates of the run, i.e. the
# accuracy of a perfect verifier. The other three are the selection methods.
Method = Literal["majority", "naive", "weighted", "pass"]
METHODS: tuple[str, ...] = get_args(Method)
DEFAULT_METHODS: tuple[Method, ...] = ("majority", "naive", "weighted")

Grader = Callable[[str, str], bool]  # (gold, pred) -> equivalent?

BudgetKind = Literal["sampling", "stepwise"]
BUDGET_KINDS: tuple[str, ...] = get_args(BudgetKind)


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
    """One run's candidates for one problem."""

    gold: str  # reference answer
    answers: tuple[str | None, ...]  # extracted answer per candidate, in the order stored
    rewards: tuple[float, ...]  # reduced PRM reward per candidate, same order
    unique_id: str = ""  # problem id; used by `level_of` overrides and for reporting
    subject: str | None = None
    level: int | None = None  # dataset level, or a difficulty bin (see `difficulty`)
    # How budgets apply (see the module docstring): "sampling" candidates are independent
    # samples in sampling order, subsampled for every budget k <= n; "stepwise" ones come
    # from one search at budget n and are reported at that N only.
    kind: BudgetKind = "sampling"
    n: int | None = None  # the N the strategy ran with; None: len(answers)

    def __post_init__(self) -> None:
        if len(self.answers) != len(self.rewards):
            raise ValueError(f"problem {self.unique_id!r}: {len(self.answers)} answers but {len(self.rewards)} rewards")
        if self.kind not in BUDGET_KINDS:
            raise ValueError(f"problem {self.unique_id!r}: kind must be one of {BUDGET_KINDS}, got {self.kind!r}")
        if self.n is not None and (isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1):
            raise ValueError(f"problem {self.unique_id!r}: n must be a positive int, got {self.n!r}")

    @property
    def budget(self) -> int:
        """The N this problem's search ran with."""
        return self.n if self.n is not None else len(self.answers)

    def budgets(self) -> tuple[int, ...]:
        """The budgets this problem can be reported at by default."""
        if self.budget < 1:
            return ()
        return default_ks(self.budget) if self.kind == "sampling" else (self.budget,)


@dataclass(frozen=True, slots=True)
class MethodCurve:
    """Accuracy of one method at each budget k, over seeds."""

    method: str
    # Per k, over the seeds that have budget k (NaN where none has):
    mean: tuple[float, ...]  # mean of the fraction of problems solved
    std: tuple[float, ...]  # sample std (ddof=1); 0.0 with one seed
    per_seed: tuple[tuple[float, ...], ...]  # [seed][k index]; NaN where that seed lacks budget k


@dataclass(frozen=True, slots=True)
class AccuracyTable:
    """Accuracy@k of several methods on one set of problems."""

    ks: tuple[int, ...]
    curves: tuple[MethodCurve, ...]  # one per method, in the requested order
    num_problems: int
    num_seeds: int  # the most runs (seeds) behind any one budget

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

    def record(self, gold: str, key: str, correct: bool) -> None:
        """Store a grade already known (results that carry per-candidate "correct")."""
        self._grades[(gold, key)] = bool(correct)

    def grade(self, gold: str, key: str, answer: str) -> bool:
        """Is `answer` (whose canonical key is `key`) equivalent to `gold`?"""
        hit = self._grades.get((gold, key))
        if hit is None:
            self.calls += 1
            # Any member of a key's group may be graded: equal keys mean equivalent answers.
            hit = bool(self.grader(gold, answer))
            self._grades[(gold, key)] = hit
        return hit


def grade_candidates(gold: str, answers: Sequence[str | None], *, cache: GradeCache | None = None) -> list[bool]:
    """Correctness of every candidate (None answers are wrong), grading each answer group once."""
    cache = cache if cache is not None else GradeCache()
    keys = candidate_keys(answers)
    out = []
    for answer, key in zip(answers, keys):
        out.append(answer is not None and key is not None and cache.grade(gold, key, answer))
    return out


@dataclass(frozen=True)
class ScoredRuns:
    """Per-problem accuracy of every run at every budget: the data behind the tables.

    Built by `score_runs`; `table(keep)` aggregates any subset of problems (a level, a
    difficulty bin) into an `AccuracyTable` without grading again.
    """

    runs: tuple[tuple[ProblemSamples, ...], ...]  # [run] -> its problems
    methods: tuple[str, ...]
    ks: tuple[int, ...]
    # [run][problem]: shape (len(methods), len(ks)); 1.0 solved, 0.0 not, fractional for an
    # average over groups or for "pass" (an expectation); NaN where it lacks the budget.
    scores: tuple[tuple[np.ndarray, ...], ...]

    def score(self, run: int, problem: int, method: str, k: int) -> float:
        return float(self.scores[run][problem][self.methods.index(method), self.ks.index(k)])

    def table(self, keep: Callable[[ProblemSamples], bool] | None = None) -> AccuracyTable | None:
        """Accuracy over the problems `keep` accepts (all by default): per run the mean
        over its problems, then mean and std over runs. None when no problem is kept."""
        per_seed = []
        counts = []
        for run, run_scores in zip(self.runs, self.scores):
            picked = [s for p, s in zip(run, run_scores) if keep is None or keep(p)]
            if picked:
                per_seed.append(_nanmean(np.stack(picked)))
                counts.append(len(picked))
        if not per_seed:
            return None
        return _make_table(self.methods, self.ks, np.stack(per_seed), max(counts))


def score_runs(
    runs: Sequence[Sequence[ProblemSamples]],
    *,
    methods: Sequence[Method] = DEFAULT_METHODS,
    ks: Sequence[int] | None = None,
    grader: Grader | None = None,
    cache: GradeCache | None = None,
) -> ScoredRuns:
    """Grade every run's problems at every budget (see `accuracy_at_k` for the arguments)."""
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
    available = sorted({k for run in runs for p in run for k in p.budgets() if has_budget(p, k)})
    ks_t = tuple(available) if ks is None else tuple(ks)
    if not ks_t or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks_t):
        raise ValueError(f"ks must be positive ints, got {ks_t}")
    if list(ks_t) != sorted(set(ks_t)):
        raise ValueError(f"ks must be strictly increasing, got {ks_t}")
    for k in ks_t:
        if not any(has_budget(p, k) for run in runs for p in run):
            raise ValueError(f"no run can be reported at budget k={k}: {describe_budgets(runs)}")
    if cache is None:
        cache = GradeCache(grader if grader is not None else is_equivalent)
    elif grader is not None and grader is not cache.grader:
        raise ValueError("pass either a grader or a cache built with it, not both")
    return ScoredRuns(
        runs=tuple(tuple(run) for run in runs),
        methods=methods,
        ks=ks_t,
        scores=tuple(tuple(score_problem(p, methods, ks_t, cache) for p in run) for run in runs),
    )


def accuracy_at_k(
    runs: Sequence[Sequence[ProblemSamples]],
    *,
    methods: Sequence[Method] = DEFAULT_METHODS,
    ks: Sequence[int] | None = None,
    level_of: Mapping[str, int] | None = None,
    grader: Grader | None = None,
    cache: GradeCache | None = None,
) -> AccuracyReport:
    """Accuracy at each budget k of each method, over runs (seeds), with level/subject breakdowns.

    :param runs: one sequence of problems per seed. Runs may differ in which problems
        they hold; a table's accuracy is per seed over the problems of that seed that
        have budget k (see the module docstring), then mean and std over the seeds that
        have any.
    :param ks: budgets; default: every budget any problem has (`ProblemSamples.budgets`:
        1, 2, 4, ... up to N for sampling runs, N for stepwise runs).
    :param level_of: unique_id -> level overriding `ProblemSamples.level` (for example
        difficulty bins from `ttsearch.evaluation.difficulty`); ids it lacks keep theirs.
    :param grader: (gold, pred) -> bool; defaults to `grading.is_equivalent`.
    :param cache: share grades across calls (must use the same grader).
    :raises ValueError: on a budget no problem can be reported at (naming what the runs have).
    """
    scored = score_runs(runs, methods=methods, ks=ks, grader=grader, cache=cache)

    def level(p: ProblemSamples) -> int | None:
        if level_of is not None and p.unique_id in level_of:
            return level_of[p.unique_id]
        return p.level

    overall = scored.table()
    assert overall is not None
    levels = sorted({lv for run in runs for p in run if (lv := level(p)) is not None})
    subjects = sorted({p.subject for run in runs for p in run if p.subject is not None})

    def at_level(lv: int) -> Callable[[ProblemSamples], bool]:
        return lambda p: level(p) == lv

    def in_subject(s: str) -> Callable[[ProblemSamples], bool]:
        return lambda p: p.subject == s

    by_level = {lv: t for lv in levels if (t := scored.table(at_level(lv))) is not None}
    by_subject = {s: t for s in subjects if (t := scored.table(in_subject(s))) is not None}
    return AccuracyReport(overall=overall, by_level=by_level, by_subject=by_subject)


def has_budget(p: ProblemSamples, k: int) -> bool:
    """Can problem `p` be reported at budget k? (sampling: k <= its samples; stepwise: k == N)"""
    if p.kind == "sampling":
        return k <= len(p.answers)
    return k == p.budget


def describe_budgets(runs: Sequence[Sequence[ProblemSamples]]) -> str:
    kinds: dict[str, set[int]] = {}
    for run in runs:
        for p in run:
            kinds.setdefault(p.kind, set()).add(len(p.answers) if p.kind == "sampling" else p.budget)
    parts = []
    if "sampling" in kinds:
        parts.append(f"sampling runs with up to {max(kinds['sampling'])} samples (any k up to that)")
    if "stepwise" in kinds:
        parts.append(f"stepwise runs at N = {sorted(kinds['stepwise'])} (reported at that N only)")
    return "; ".join(parts)


def score_problem(p: ProblemSamples, methods: Sequence[Method], ks: Sequence[int], cache: GradeCache) -> np.ndarray:
    """Per-problem accuracy, shape (len(methods), len(ks)); NaN where `p` lacks budget k.

    Sampling: the mean over the len(answers) // k disjoint groups of k consecutive
    candidates. Stepwise (only at k == N): the selection over all its candidates; "pass"
    is then whether any candidate is correct.
    """
    # Canonicalise once per candidate; every group, method (and the oracle) reuses the keys.
    keys = candidate_keys(p.answers)
    out = np.full((len(methods), len(ks)), np.nan)
    correct: int | None = None
    for ki, k in enumerate(ks):
        if not has_budget(p, k):
            continue
        m = len(p.answers)
        for mi, method in enumerate(methods):
            if method == "pass":
                if correct is None:
                    correct = sum(
                        1
                        for a, key in zip(p.answers, keys)
                        if a is not None and key is not None and cache.grade(p.gold, key, a)
                    )
                if m == 0:
                    out[mi, ki] = 0.0
                else:
                    # Sampling: unbiased over every k-subset of the N samples; stepwise: any of them.
                    out[mi, ki] = pass_at_k(m, correct, k if p.kind == "sampling" else m)
                continue
            groups = [(i, i + k) for i in range(0, m - k + 1, k)] if p.kind == "sampling" else [(0, m)]
            solved = 0
            for lo, hi in groups:
                sel = select_by_keys(method, p.answers[lo:hi], keys[lo:hi], p.rewards[lo:hi])
                solved += sel is not None and cache.grade(p.gold, sel.key, sel.answer)
            out[mi, ki] = solved / len(groups)
    return out


def _nanmean(stack: np.ndarray) -> np.ndarray:
    """Mean over axis 0 ignoring NaN; NaN (without a warning) where every entry is NaN."""
    valid = ~np.isnan(stack)
    count = valid.sum(axis=0)
    total = np.where(valid, stack, 0.0).sum(axis=0)
    mean: np.ndarray = np.divide(total, count, out=np.full(total.shape, np.nan), where=count > 0)
    return mean


def _make_table(
    methods: tuple[str, ...], ks: tuple[int, ...], per_seed: np.ndarray, num_problems: int
) -> AccuracyTable:
    # per_seed: (seeds, methods, ks); NaN where a seed has no problem at that budget.
    seeds = per_seed.shape[0]
    mean = _nanmean(per_seed)
    valid = ~np.isnan(per_seed)
    count = valid.sum(axis=0)
    dev2 = np.where(valid, (per_seed - np.where(np.isnan(mean), 0.0, mean)) ** 2, 0.0).sum(axis=0)
    std = np.divide(dev2, count - 1, out=np.zeros(dev2.shape), where=count > 1) ** 0.5
    std = np.where(count == 0, np.nan, std)
    curves = tuple(
        MethodCurve(
            method=m,
            mean=tuple(float(x) for x in mean[mi]),
            std=tuple(float(x) for x in std[mi]),
            per_seed=tuple(tuple(float(x) for x in per_seed[s, mi]) for s in range(seeds)),
        )
        for mi, m in enumerate(methods)
    )
    # Runs at different N (stepwise) are not seeds of one point: count the runs per budget.
    return AccuracyTable(ks=ks, curves=curves, num_problems=num_problems, num_seeds=int(count.max()))
