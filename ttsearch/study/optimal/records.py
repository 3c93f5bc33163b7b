"""The experiment's records, typed for the compute-optimal analysis (docs/records.md, issue #9).

Directories, shards and their checks are the report's `load_experiment`; this module only
turns its records into what the analysis needs: per candidate the answer, score, grade
and tokens (graded here, once per distinct answer, when a record lacks "correct").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ttsearch.errors import ExperimentError
from ttsearch.evaluation.metrics import GradeCache, grade_candidates
from ttsearch.study.load import Experiment, load_experiment

Kind = Literal["sampling", "stepwise"]


@dataclass(frozen=True, slots=True)
class CandidateRecord:
    """One final solution of a recorded search, as the analysis needs it."""

    answer: str | None
    score: float  # the strategy's reduction of the step scores (0.0 without a verifier)
    scored: bool  # the verifier scored it (majority voting never calls the verifier)
    correct: bool  # graded against gold (by the runner, or here when the record lacks it)
    num_tokens: int  # generated tokens of this solution


@dataclass(frozen=True, slots=True)
class ProblemRecord:
    """One problem of one run (one record line)."""

    unique_id: str
    gold: str
    candidates: tuple[CandidateRecord, ...]  # sampling runs: in sample order
    error: str | None
    usage: dict[str, float]  # numeric fields of the record's usage
    correct: bool  # the answer the run selected was right (the record's own grade)


@dataclass(frozen=True, slots=True)
class RunRecords:
    """Every finished problem of one run (one strategy entry, one N, one seed)."""

    run_id: str
    label: str
    strategy: str  # registry name
    config: dict[str, Any]  # the strategy's dataclass fields as run
    kind: Kind
    n: int
    seed: int
    budgets: tuple[int, ...]
    problems: dict[str, ProblemRecord]  # by unique_id


def load_runs(dirs: Sequence[str | Path], *, cache: GradeCache | None = None) -> list[RunRecords]:
    """Runs of one experiment directory, or of several shards of one (merged by run_id).

    :raises ExperimentError: whatever `ttsearch.study.load.load_experiment` refuses (a
        missing directory or manifest, shards of different recipes, a problem in two
        shards of one run, a record without the contract's fields), or a record without
        a field the analysis reads.
    """
    if not dirs:
        raise ExperimentError("no experiment directory given")
    return runs_from_experiment(load_experiment(list(dirs)), cache=cache)


def runs_from_experiment(experiment: Experiment, *, cache: GradeCache | None = None) -> list[RunRecords]:
    """Type the records of an experiment the report has already loaded."""
    cache = cache if cache is not None else GradeCache()
    runs = []
    for run in experiment.runs:
        spec = run.spec
        problems = {}
        for number, record in enumerate(run.records, 1):
            problem = _problem(spec.run_id, number, record, cache)
            problems[problem.unique_id] = problem
        runs.append(
            RunRecords(
                run_id=spec.run_id,
                label=spec.label,
                strategy=spec.strategy,
                config=_config(spec.config, run.records),
                kind=spec.kind,
                n=spec.n,
                seed=spec.seed,
                budgets=tuple(spec.budgets),
                problems=problems,
            )
        )
    return sorted(runs, key=lambda r: (r.label, r.n, r.seed))


def _config(declared: dict[str, Any], records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The strategy's fields as run: a manifest declares the recipe entry's options (with
    its "strategy" name, and without the fields left at their defaults); each record has
    every dataclass field as run, which wins. Keys that are no field of the strategy
    ("strategy", "label") are left out, so a policy table can rebuild the strategy."""
    recorded: dict[str, Any] = next((r["config"] for r in records if isinstance(r.get("config"), dict)), {})
    return {k: v for k, v in {**declared, **recorded}.items() if k not in ("strategy", "label")}


def _record_correct(record: dict[str, Any], gold: str, cache: GradeCache) -> bool:
    """The record's own grade; graded here when the runner could not (`correct` null)."""
    if record.get("correct") is not None:
        return bool(record["correct"])
    answer = record.get("answer")
    return answer is not None and grade_candidates(gold, [answer], cache=cache)[0]


def _problem(run_id: str, number: int, record: dict[str, Any], cache: GradeCache) -> ProblemRecord:
    try:
        gold = str(record["gold"])
        raw = record["candidates"]
        answers = [c["answer"] for c in raw]
        if all(c.get("correct") is not None for c in raw):
            correct = [bool(c["correct"]) for c in raw]
        else:  # written before the runner graded candidates, or while its grader was down
            correct = grade_candidates(gold, answers, cache=cache)
        candidates = tuple(
            CandidateRecord(
                answer=c["answer"],
                score=float(c["score"]),
                scored=bool(c.get("step_scores")),
                correct=ok,
                num_tokens=int(c["num_tokens"]),
            )
            for c, ok in zip(raw, correct)
        )
        usage = {k: float(v) for k, v in record.get("usage", {}).items() if isinstance(v, (int, float))}
        return ProblemRecord(
            unique_id=str(record["unique_id"]),
            gold=gold,
            candidates=candidates,
            error=record.get("error"),
            usage=usage,
            correct=_record_correct(record, gold, cache),
        )
    except (KeyError, TypeError) as error:
        raise ExperimentError(f"run {run_id}, record {number}: lacks a field the analysis needs ({error})") from None
