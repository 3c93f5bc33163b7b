"""The numbers of a report: accuracy by strategy x N x selection, pass@N, difficulty bins, compute.

Everything here is data (frozen dataclasses); `render`, `plots` and `html` only present it.

* Accuracy: per strategy entry (label), per budget N, per selection (majority, naive,
  weighted) and the oracle pass@N, mean +- std over seeds (`ttsearch.evaluation.metrics`).
  Sampling strategies are read at every recipe N up to the N they ran with, each point
  the mean over the disjoint groups of N consecutive samples; stepwise strategies are
  reported at the N they ran with. Majority voting has no scores, so only its majority
  and pass rows exist. Failed problems (an error recorded) are left out of accuracy and
  counted per run.
* Difficulty: MATH levels (the dataset's), and 5 quantile bins (`evaluation.difficulty`)
  by oracle pass@1 and by mean PRM score, over the experiment's own samples: the
  candidates of its sampling runs (every seed; unbiased samples of the policy), or of all
  runs when it has none. The predicted bins use only scored candidates.
* Compute per problem: the mean over a run's problems of every numeric field of the
  records' `usage` (generated and PRM tokens, wall seconds, ...), failed problems
  included. A sampling run's budget k is charged k/N of its run (k of its N samples).
  The PRM's cost is `verifier_computed_tokens` (what it computed); `verifier_cached_tokens`
  (read from its prefix cache or score memo) is shown apart, and `verifier_tokens` is what
  was sent (both). Records older than that field get it derived (`prm_computed`), and the
  report's notes say so.

Records without per-candidate "correct" are graded here, once per distinct canonical
answer and gold (`GradeCache`); records that carry it are never re-graded.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

from ttsearch.evaluation.aggregation import candidate_keys
from ttsearch.evaluation.difficulty import NUM_LEVELS, quantile_levels
from ttsearch.evaluation.grading import is_equivalent
from ttsearch.evaluation.metrics import (
    AccuracyTable,
    GradeCache,
    Grader,
    Method,
    ProblemSamples,
    ScoredRuns,
    score_runs,
)
from ttsearch.study.load import Experiment, Run

SELECTIONS: tuple[Method, ...] = ("majority", "naive", "weighted")
BIN_KINDS = ("oracle", "predicted")
_UNSCORED = ("majority", "MajorityVoting")  # strategies that never call the PRM


@dataclass(frozen=True, slots=True)
class DifficultyBins:
    """5 quantile levels (1 easiest) of the problems, by one statistic."""

    kind: str  # "oracle" (pass@1 against the gold answer) or "predicted" (mean PRM score)
    statistic: Mapping[str, float]  # unique_id -> pass@1 or mean score
    level: Mapping[str, int]  # unique_id -> 1..5
    samples: int  # candidates the statistic was computed from
    source: str  # which runs' candidates, in words


@dataclass(frozen=True, slots=True)
class RunSummary:
    run_id: str
    n: int
    seed: int
    problems: int  # records in the run (failed included)
    failed: int
    usage: Mapping[str, float]  # per problem, mean of each numeric usage field
    # How verifier_computed_tokens was had where a record lacks it (None: every record has it).
    prm_fallback: str | None = None


@dataclass(frozen=True, slots=True)
class ComputePoint:
    """Mean compute per problem of one strategy at budget k (mean over its runs with k)."""

    k: int
    usage: Mapping[str, float]  # field -> per problem


@dataclass(frozen=True)
class StrategyReport:
    label: str
    strategy: str
    kind: str  # "sampling" | "stepwise"
    selection: str  # the strategy's own selection: what plots and the compute view show
    runs: tuple[RunSummary, ...]
    scored: ScoredRuns  # per-problem scores: scored.runs[i] belongs to runs[i]
    overall: AccuracyTable  # methods: majority, naive, weighted (if scored), pass
    by_level: Mapping[int, AccuracyTable]  # MATH level -> table
    by_bin: Mapping[str, Mapping[int, AccuracyTable]]  # "oracle"/"predicted" -> bin -> table
    compute: tuple[ComputePoint, ...]  # one per k in overall.ks

    @property
    def ks(self) -> tuple[int, ...]:
        return self.overall.ks

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(sorted({r.seed for r in self.runs}))

    def accuracy(self, k: int, selection: str | None = None) -> float:
        return self.overall.accuracy(selection or self.selection, k)

    def problem_scores(self) -> list[dict[str, Any]]:
        """One row per (run, problem): accuracy at each budget per method (None: no such budget)."""
        rows = []
        for run, problems, scores in zip(self.runs, self.scored.runs, self.scored.scores):
            for p, s in zip(problems, scores):
                rows.append(
                    {
                        "label": self.label,
                        "run_id": run.run_id,
                        "n": run.n,
                        "seed": run.seed,
                        "unique_id": p.unique_id,
                        "level": p.level,
                        "scores": {
                            m: {str(k): _num(s[mi, ki]) for ki, k in enumerate(self.scored.ks)}
                            for mi, m in enumerate(self.scored.methods)
                        },
                    }
                )
        return rows


@dataclass(frozen=True)
class Report:
    experiment: Experiment
    strategies: tuple[StrategyReport, ...]  # in recipe order
    bins: Mapping[str, DifficultyBins]  # "oracle" and, when any candidate is scored, "predicted"
    problems: int  # distinct problems with at least one finished record
    notes: tuple[str, ...]  # what the numbers mean, for every output

    def strategy(self, label: str) -> StrategyReport:
        for s in self.strategies:
            if s.label == label:
                return s
        raise KeyError(f"no strategy {label!r} in this report; have {[s.label for s in self.strategies]}")


NOTES = (
    "N for sampling strategies (majority, best_of_n): read from the same samples at every N up to the N they "
    "ran with; each point is the mean over the disjoint groups of N consecutive samples.",
    "N for stepwise strategies (beam, dvts, lookahead): reported only at the N they ran with.",
    "Mean +- std over seeds (sample std); pass@N is the oracle (a perfect verifier).",
    "Failed problems (an error recorded) are left out of accuracy; their compute counts.",
    "Compute of a sampling strategy at budget N is its run's scaled by N / (the N it ran with).",
    "PRM tokens: verifier_computed_tokens is what the PRM computed (the cost); verifier_cached_tokens were "
    "read from its prefix cache or score memo; verifier_tokens is what was sent (both). Runs of one experiment "
    "share the PRM's cache and memo, so a run's computed tokens depend on the runs before it.",
)

# Where a record lacks verifier_computed_tokens (docs/records.md: added 2026-12-02).
SENT_MINUS_CACHED = "verifier_tokens - verifier_cached_tokens"
SENT = "verifier_tokens (sent, cached included: no cache count recorded)"


def build_report(experiment: Experiment, *, grader: Grader | None = None, cache: GradeCache | None = None) -> Report:
    """Every number of the report, from the experiment's records.

    :param grader: (gold, pred) -> bool for candidates without a recorded "correct";
        default `grading.is_equivalent` (bounded).
    """
    cache = cache if cache is not None else GradeCache(grader if grader is not None else is_equivalent)
    _record_known_grades(experiment, cache)
    bins = _difficulty_bins(experiment, cache)
    strategies = tuple(_strategy_report(experiment, label, cache, bins) for label in experiment.labels)
    problems = len({str(r["unique_id"]) for run in experiment.runs for r in run.records if r.get("error") is None})
    return Report(
        experiment=experiment,
        strategies=strategies,
        bins=bins,
        problems=problems,
        notes=NOTES + _fallback_notes(strategies),
    )


def prm_computed(usage: Mapping[str, Any]) -> tuple[float, str | None] | None:
    """(PRM tokens computed, how they were had: None if recorded) of one record's usage;
    None when the record has no PRM token count at all."""
    recorded = usage.get("verifier_computed_tokens")
    if _is_number(recorded):
        return float(recorded), None
    sent = usage.get("verifier_tokens")
    if not _is_number(sent):
        return None
    cached = usage.get("verifier_cached_tokens")
    if _is_number(cached):
        return float(sent) - float(cached), SENT_MINUS_CACHED
    return float(sent), SENT


def _fallback_notes(strategies: tuple[StrategyReport, ...]) -> tuple[str, ...]:
    used = {r.prm_fallback for s in strategies for r in s.runs if r.prm_fallback}
    if not used:
        return ()
    how = " or ".join(sorted(used))
    return (f"Some records predate verifier_computed_tokens: for them it is {how}.",)


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _record_known_grades(experiment: Experiment, cache: GradeCache) -> None:
    for run in experiment.runs:
        for r in run.records:
            cands = r["candidates"]
            if not any("correct" in c for c in cands):
                continue
            keys = candidate_keys([c.get("answer") for c in cands])
            for c, key in zip(cands, keys):
                if key is not None and "correct" in c:
                    cache.record(str(r["gold"]), key, bool(c["correct"]))


def _samples(run: Run) -> list[ProblemSamples]:
    out = []
    for r in run.records:
        if r.get("error") is not None or not r["candidates"]:
            continue
        level = r.get("level")
        out.append(
            ProblemSamples(
                gold=str(r["gold"]),
                answers=tuple(c.get("answer") for c in r["candidates"]),
                rewards=tuple(_reward(c) for c in r["candidates"]),
                unique_id=str(r["unique_id"]),
                subject=r.get("subject"),
                level=level if isinstance(level, int) and not isinstance(level, bool) else None,
                kind=run.spec.kind,
                n=run.spec.n,
            )
        )
    return out


def _reward(candidate: dict[str, Any]) -> float:
    score = candidate.get("score")
    return float(score) if isinstance(score, (int, float)) and math.isfinite(score) else 0.0


def _strategy_report(
    experiment: Experiment, label: str, cache: GradeCache, bins: Mapping[str, DifficultyBins]
) -> StrategyReport:
    samples = {run.spec.run_id: _samples(run) for run in experiment.runs_of(label)}
    runs = [run for run in experiment.runs_of(label) if samples[run.spec.run_id]]
    if not runs:
        raise ValueError(f"strategy {label!r}: every problem of every run failed; nothing to report")
    spec = runs[0].spec
    scored_methods = spec.strategy not in _UNSCORED
    methods: tuple[Method, ...] = (*SELECTIONS, "pass") if scored_methods else ("majority", "pass")
    ks = sorted({k for run in runs for k in run.spec.budgets})
    scored = score_runs([samples[run.spec.run_id] for run in runs], methods=methods, ks=ks, cache=cache)
    overall = scored.table()
    assert overall is not None
    levels = sorted({p.level for problems in scored.runs for p in problems if p.level is not None})
    by_level = {lv: t for lv in levels if (t := scored.table(_at_level(lv))) is not None}
    by_bin: dict[str, dict[int, AccuracyTable]] = {}
    for kind, b in bins.items():
        tables = {}
        for lv in range(1, NUM_LEVELS + 1):
            t = scored.table(_in_bin(b, lv))
            if t is not None:
                tables[lv] = t
        by_bin[kind] = tables
    summaries = tuple(_run_summary(run) for run in runs)
    return StrategyReport(
        label=label,
        strategy=spec.strategy,
        kind=spec.kind,
        selection=spec.selection if scored_methods else "majority",
        runs=summaries,
        scored=scored,
        overall=overall,
        by_level=by_level,
        by_bin=by_bin,
        compute=tuple(_compute_point(runs, summaries, k) for k in ks),
    )


def _run_summary(run: Run) -> RunSummary:
    totals: dict[str, float] = {}
    fallbacks = set()
    for r in run.records:
        usage = r.get("usage") or {}
        for name, value in usage.items():
            if _is_number(value):
                totals[name] = totals.get(name, 0.0) + float(value)
        computed = prm_computed(usage)
        if computed is not None and computed[1] is not None:
            # An older record: derive the PRM's cost so every run has the same column.
            totals["verifier_computed_tokens"] = totals.get("verifier_computed_tokens", 0.0) + computed[0]
            fallbacks.add(computed[1])
    count = len(run.records)
    return RunSummary(
        run_id=run.spec.run_id,
        n=run.spec.n,
        seed=run.spec.seed,
        problems=count,
        failed=run.failed,
        usage={name: total / count for name, total in totals.items()},
        prm_fallback=" or ".join(sorted(fallbacks)) or None,
    )


def _compute_point(runs: list[Run], summaries: tuple[RunSummary, ...], k: int) -> ComputePoint:
    picked = [
        (s, k / run.spec.n if run.spec.kind == "sampling" else 1.0)
        for run, s in zip(runs, summaries)
        if (run.spec.kind == "sampling" and k <= run.spec.n) or run.spec.n == k
    ]
    fields = sorted({name for s, _ in picked for name in s.usage})
    usage = {name: math.fsum(s.usage.get(name, 0.0) * scale for s, scale in picked) / len(picked) for name in fields}
    return ComputePoint(k=k, usage=usage)


def _at_level(lv: int) -> Callable[[ProblemSamples], bool]:
    return lambda p: p.level == lv


def _in_bin(b: DifficultyBins, lv: int) -> Callable[[ProblemSamples], bool]:
    return lambda p: b.level.get(p.unique_id) == lv


def _difficulty_bins(experiment: Experiment, cache: GradeCache) -> dict[str, DifficultyBins]:
    sampling = [run for run in experiment.runs if run.spec.kind == "sampling"]
    pool = sampling or list(experiment.runs)
    source = "the sampling runs' candidates" if sampling else "every run's candidates (no sampling run)"
    correct: dict[str, list[bool]] = {}
    rewards: dict[str, list[float]] = {}
    for run in pool:
        for r in run.records:
            if r.get("error") is not None or not r["candidates"]:
                continue
            uid, gold = str(r["unique_id"]), str(r["gold"])
            answers = [c.get("answer") for c in r["candidates"]]
            keys = candidate_keys(answers)
            for c, a, key in zip(r["candidates"], answers, keys):
                correct.setdefault(uid, []).append(a is not None and key is not None and cache.grade(gold, key, a))
                if c.get("step_scores"):
                    rewards.setdefault(uid, []).append(_reward(c))
    bins: dict[str, DifficultyBins] = {}
    if correct:
        bins["oracle"] = _bins("oracle", {u: sum(c) / len(c) for u, c in correct.items()}, correct, source)
    if rewards:
        scored_source = source.replace("candidates", "scored candidates")
        bins["predicted"] = _bins(
            "predicted", {u: math.fsum(r) / len(r) for u, r in rewards.items()}, rewards, scored_source
        )
    return bins


def _bins(kind: str, statistic: dict[str, float], samples: Mapping[str, list[Any]], source: str) -> DifficultyBins:
    uids = sorted(statistic)
    levels = quantile_levels([statistic[u] for u in uids], keys=uids)
    return DifficultyBins(
        kind=kind,
        statistic={u: statistic[u] for u in uids},
        level=dict(zip(uids, levels)),
        samples=sum(len(samples[u]) for u in uids),
        source=source,
    )


def _num(x: float) -> float | None:
    return None if math.isnan(x) else float(x)
