"""Read an experiment directory's records (the contract of RECORDS.md, issue #9).

A small loader of our own, because the report's `load_experiment` (ttsearch/report) has
not landed yet; once it has, this module should be replaced by it. It reads what the
compute-optimal analysis needs and nothing more: the manifest's run specs (when there is
a manifest) and every record of `DIR/runs/<run_id>.jsonl`. Several DIRs (shards of one
dataset) merge by run_id; one problem found in two shards of the same run is an error
naming both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

from ttsearch.evaluation.metrics import GradeCache, grade_candidates

Kind = Literal["sampling", "stepwise"]


class ExperimentError(ValueError):
    """An experiment directory cannot be used (which file, what is wrong)."""


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
    """Runs of one or more experiment directories (shards merge by run_id).

    :raises ExperimentError: a missing directory or runs folder, a record without the
        contract's fields, or one problem present in two shards of the same run.
    """
    # Imported here: the runner imports the strategy registry, which imports this package.
    from ttsearch.runner import read_records

    if not dirs:
        raise ExperimentError("no experiment directory given")
    cache = cache if cache is not None else GradeCache()
    runs: dict[str, RunRecords] = {}
    origin: dict[tuple[str, str], Path] = {}  # (run_id, unique_id) -> the dir it came from
    for raw in dirs:
        directory = Path(raw)
        folder = directory / "runs"
        if not folder.is_dir():
            raise ExperimentError(f"{directory}: not an experiment directory (no runs/ folder)")
        specs = _manifest_specs(directory)
        for path in sorted(folder.glob("*.jsonl")):
            records = read_records(path)
            if not records:
                continue
            run = runs.get(path.stem)
            if run is None:
                run = _new_run(path, records[0], specs.get(path.stem))
                runs[path.stem] = run
            for number, record in enumerate(records, 1):
                problem = _problem(path, number, record, cache)
                key = (run.run_id, problem.unique_id)
                if key in origin:
                    raise ExperimentError(
                        f"run {run.run_id}: problem {problem.unique_id!r} is in both {origin[key]} and {directory}"
                    )
                origin[key] = directory
                run.problems[problem.unique_id] = problem
    if not runs:
        raise ExperimentError(f"no records in {', '.join(str(d) for d in dirs)}")
    return sorted(runs.values(), key=lambda r: (r.label, r.n, r.seed))


def _manifest_specs(directory: Path) -> dict[str, dict[str, Any]]:
    path = directory / "manifest.json"
    if not path.exists():
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ExperimentError(f"{path}: not valid JSON ({error.msg})") from None
    return {spec["run_id"]: spec for spec in manifest.get("runs", []) if "run_id" in spec}


def _new_run(path: Path, first: dict[str, Any], spec: dict[str, Any] | None) -> RunRecords:
    source = spec if spec is not None else first
    where = f"{path.parent.parent / 'manifest.json'}" if spec is not None else f"{path}:1"
    try:
        kind = source["kind"]
        if kind not in ("sampling", "stepwise"):
            raise ExperimentError(f"{where}: kind must be 'sampling' or 'stepwise', got {kind!r}")
        return RunRecords(
            run_id=path.stem,
            label=str(source["label"]),
            strategy=str(source["strategy"]),
            config=dict(source["config"]),
            kind=kind,
            n=int(source["n"]),
            seed=int(source["seed"]),
            budgets=tuple(int(b) for b in source["budgets"]),
            problems={},
        )
    except KeyError as missing:
        raise ExperimentError(f"{where}: run {path.stem} has no field {missing}") from None


def _problem(path: Path, number: int, record: dict[str, Any], cache: GradeCache) -> ProblemRecord:
    try:
        gold = str(record["gold"])
        raw = record["candidates"]
        answers = [c["answer"] for c in raw]
        if all("correct" in c for c in raw):
            correct = [bool(c["correct"]) for c in raw]
        else:  # records written before the runner graded candidates
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
            correct=bool(record.get("correct", False)),
        )
    except (KeyError, TypeError) as error:
        raise ExperimentError(f"{path}:{number}: record lacks a field the analysis needs ({error})") from None
