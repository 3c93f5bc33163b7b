"""`run_experiment`: every (strategy, N, seed) run of a recipe through one `Searcher`.

The engines start once. All unfinished (run, problem) searches form one stream that the
searcher admits `execution.max_concurrent_problems` at a time, so the engines see one
large batch of work across runs and seeds instead of one run after another. Each problem's
record is appended to its run's file the moment it finishes.

Grading never turns into a silent "wrong": when the grader cannot run, an answer it was
needed for is recorded ungraded (`"correct": null` with `"grade_error"`), the search goes
on, and the run ends with `GradingError`; the next run of the same recipe grades those
records first (from the record, no search) once the grader works. `retry_failed` searches
again the problems whose record has an error, and their new records replace the old.

The pieces other executors reuse (`ttsearch.study.cluster` runs the same searches on Ray
workers): `execute_experiment` does everything around the searching (checks, the store,
resume, regrading, the session's stats, the report), an `Executor` does the searching,
and `ExperimentSession.record` is the one place a finished search becomes a record.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ttsearch.core.backend import ForgetsCaches
from ttsearch.core.results import SearchResult, selected_index
from ttsearch.core.scheduler import Usage
from ttsearch.core.search import SearchLimits
from ttsearch.core.searcher import Searcher, SearchJob
from ttsearch.errors import ExperimentError, GradingError
from ttsearch.evaluation.datasets import Problem
from ttsearch.evaluation.grading import is_equivalent, quick_verdict
from ttsearch.study.benchmark import result_record
from ttsearch.study.engines import quiet_vllm_logs, start_backends
from ttsearch.study.plan import PlannedRun
from ttsearch.study.preflight import Prepared, prepare
from ttsearch.study.progress import ExperimentProgress
from ttsearch.study.recipe import Recipe
from ttsearch.study.report import build_report, load_experiment, write_report
from ttsearch.study.store import RUNS_DIR, ExperimentStore, StoredRun

__all__ = ["ExperimentSession", "ExperimentSummary", "Executor", "execute_experiment", "run_experiment"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExperimentSummary:
    out_dir: Path
    runs: int
    problems: int  # per run (this shard's)
    searched: int  # (run, problem) searches done by this call
    resumed: int  # found already done
    failed: int  # searches of this call that recorded an error
    usage: Usage  # compute of this call's searches
    seconds: float  # wall time of this call's searching (engine start not included)
    engine_seconds: float  # engine start-up
    report_html: Path | None
    retried: int = 0  # of `searched`: failed problems searched again (`retry_failed`)
    regraded: int = 0  # ungraded answers of earlier runs graded by this call
    failed_kept: int = 0  # problems whose error record was kept (not retried)


async def run_experiment(
    recipe: Recipe,
    out_dir: str | Path,
    *,
    shard: tuple[int, int] | None = None,
    restart: bool = False,
    retry_failed: bool = False,
    progress: bool = True,
    verbose: bool = False,
    report: bool = True,
    backends: tuple[Any, Any] | None = None,
    prepared: Prepared | None = None,
) -> ExperimentSummary:
    """Run (or resume) the recipe's experiment into `out_dir`, then write its report.

    Every input is checked before an engine starts (`prepare`); a directory holding a
    different recipe is refused unless `restart`. An engine failure stops the run with
    `SearchError`; every finished problem is already on disk, and rerunning resumes.
    A problem whose record has an error counts as done, unless `retry_failed`: then it
    is searched again and its new record replaces the old. Answers left ungraded by an
    earlier run are graded first; if the grader cannot run, the search still finishes,
    and then `GradingError` says how many answers are ungraded (rerunning grades them).
    `backends`: a (policy, verifier) pair to use instead of the recipe's models (left
    open; e.g. engines you keep warm across experiments, or scripted ones in tests).
    `prepared`: `prepare(recipe, shard=shard)` if the caller has already checked it.
    """
    return await execute_experiment(
        recipe,
        out_dir,
        _InProcess(backends),
        shard=shard,
        restart=restart,
        retry_failed=retry_failed,
        progress=progress,
        verbose=verbose,
        report=report,
        prepared=prepared,
    )


class Executor(Protocol):
    """Searches a session's `todo` and hands every result to `session.record`; sets
    `session.engine_seconds` (its engines' start-up) and searches inside `session.searching()`."""

    async def __call__(self, session: ExperimentSession) -> None: ...


async def execute_experiment(
    recipe: Recipe,
    out_dir: str | Path,
    executor: Executor,
    *,
    shard: tuple[int, int] | None = None,
    restart: bool = False,
    retry_failed: bool = False,
    progress: bool = True,
    verbose: bool = False,
    report: bool = True,
    prepared: Prepared | None = None,
) -> ExperimentSummary:
    """`run_experiment` with the searching done by `executor`: the same checks, store,
    resume rules, regrading, session stats and report, whoever searches."""
    if restart and retry_failed:
        raise ValueError(
            "restart (--restart) moves every record aside, so retry_failed (--retry-failed) would find "
            "no failed problem to retry; use one or the other"
        )
    if prepared is None:
        prepared = prepare(recipe, shard=shard)
    out = Path(out_dir)
    store = ExperimentStore(out, recipe, prepared.runs, shard=shard, fsync_seconds=recipe.execution.fsync_seconds)
    store.check(restart=restart)  # before any engine starts
    if not verbose:
        quiet_vllm_logs()
    stored = store.open(restart=restart, retry_failed=retry_failed)
    todo = [(run, p) for run in prepared.runs for p in prepared.problems if p.unique_id not in stored[run.run_id].done]
    session = ExperimentSession(
        prepared=prepared,
        store=store,
        todo=todo,
        retried=sum(p.unique_id in stored[run.run_id].retry for run, p in todo),
        show_progress=progress,
    )
    resumed = len(prepared.runs) * len(prepared.problems) - len(todo)
    grader = session.grader
    regraded = 0
    searched = False
    try:
        regraded = await _regrade(store, stored, grader)
        if todo:
            await executor(session)
        searched = True
    finally:
        store.close(
            finished=searched and not grader.ungraded,  # an ungraded answer is unfinished work
            stats={
                "searched": len(todo) if searched else None,
                "retried": session.retried if searched else None,
                "regraded": regraded,
                "ungraded": grader.ungraded,
                "engine_seconds": round(session.engine_seconds, 1),
                "search_seconds": round(session.search_seconds, 1),
                **session.extra_stats,
            },
        )
    if grader.ungraded:
        raise grader.error(out / RUNS_DIR)
    html = _write_report(out) if report else None
    return ExperimentSummary(
        out_dir=out,
        runs=len(prepared.runs),
        problems=len(prepared.problems),
        searched=len(todo),
        resumed=resumed,
        failed=session.failed,
        usage=session.usage,
        seconds=session.search_seconds,
        engine_seconds=session.engine_seconds,
        report_html=html,
        retried=session.retried,
        regraded=regraded,
        failed_kept=sum(len(run.failed) for run in stored.values()),
    )


@dataclass(eq=False)
class ExperimentSession:
    """One call's work on an experiment directory: the searches left (`todo`, in plan
    order) and the single writer of their records. Executors search; `record` grades a
    result, appends its record to its run's file and moves the progress display."""

    prepared: Prepared
    store: ExperimentStore
    todo: list[tuple[PlannedRun, Problem]]
    retried: int  # of `todo`: failed problems searched again
    show_progress: bool = True
    grader: _AnswerGrader = field(default_factory=lambda: _AnswerGrader())
    usage: Usage = field(default_factory=Usage)  # compute of this call's searches
    failed: int = 0  # searches of this call that recorded an error
    engine_seconds: float = 0.0  # set by the executor: its engines' start-up
    search_seconds: float = 0.0  # set by `searching()`
    extra_stats: dict[str, Any] = field(default_factory=dict)  # an executor's own, for the manifest's session
    progress: ExperimentProgress | None = None  # while `searching()`
    _left: dict[str, int] = field(default_factory=dict)  # run_id -> searches not recorded yet

    def __post_init__(self) -> None:
        to_search = Counter(run.run_id for run, _ in self.todo)
        self._left = {run.run_id: to_search[run.run_id] for run in self.prepared.runs}

    @contextmanager
    def searching(self) -> Iterator[ExperimentProgress]:
        """The progress display, open while the executor searches; times the searching."""
        total = len(self.prepared.runs) * len(self.prepared.problems)
        bar = ExperimentProgress(
            total=total,
            done=total - len(self.todo),
            runs=len(self.prepared.runs),
            runs_done=sum(v == 0 for v in self._left.values()),
            retried=self.retried,
            enabled=self.show_progress,
        )
        self.progress = bar
        started = time.perf_counter()
        try:
            yield bar
        finally:
            self.search_seconds = time.perf_counter() - started
            bar.close()

    async def record(
        self,
        run: PlannedRun,
        problem: Problem,
        result: SearchResult,
        *,
        date_string: str | None,
        tree: dict[str, Any] | None = None,
    ) -> None:
        """Grade `result` (the search of `problem` in `run`) and append its record; with its
        tree (`result.tree`, or `tree`: a snapshot taken where it ran) when kept."""
        correct, grade_error = await self.grader.grade(problem.answer, result.answer)
        snapshot = result.tree.snapshot() if result.tree is not None else tree
        if snapshot is not None:
            # Before the record: a kill between the two leaves the problem to search again,
            # never a record whose tree is missing.
            self.store.tree_writer(run.run_id).write(tree_record(result, problem, correct, snapshot))
        record = result_record(result, problem, run.strategy, bool(correct), date_string=date_string)
        record = _with_grade(record, correct, grade_error)
        record.update(
            run_id=run.run_id,
            label=run.label,
            strategy=run.strategy_name,
            kind=run.kind,
            n=run.n,
            seed=run.seed,
            budgets=list(run.budgets),
        )
        self.store.writer(run.run_id).write(record)
        self.usage.add(result.usage)
        self.failed += result.error is not None
        self._left[run.run_id] -= 1
        if self.progress is not None:
            self.progress.update(
                result.usage, run_finished=self._left[run.run_id] == 0, ungraded=grade_error is not None
            )


class _AnswerGrader:
    """Grades a selected answer against the gold one; says so when it cannot.

    Once the grader has failed to run, it is not asked again in this run (each try may
    wait out a worker's start-up, minutes, while the search stalls): only the answers the
    in-process fast path settles are graded, the rest are left ungraded for the next run.
    """

    def __init__(self) -> None:
        self.failure: str | None = None  # why the grader cannot run
        self.ungraded = 0  # answers left without a grade by this run

    async def grade(self, gold: str, answer: str | None) -> tuple[bool | None, str | None]:
        """(correct, None), or (None, why) when the answer could not be graded."""
        if answer is None:
            return False, None
        if self.failure is None:
            try:
                return await asyncio.to_thread(is_equivalent, gold, answer), None
            except GradingError as error:
                self.failure = str(error)
                logger.error("the grader cannot run (%s): answers it is needed for are recorded ungraded", error)
        verdict = quick_verdict(gold, answer)
        if verdict is not None:
            return verdict, None
        self.ungraded += 1
        return None, self.failure

    def error(self, runs_dir: Path) -> GradingError:
        answers = "1 answer" if self.ungraded == 1 else f"{self.ungraded} answers"
        return GradingError(
            f"{answers} could not be graded ({self.failure}); their records are kept ungraded "
            f'("correct": null, "grade_error") in {runs_dir}: rerun the same command to grade them '
            "once the grader works (nothing is searched again)"
        )


def _with_grade(record: dict[str, Any], correct: bool | None, grade_error: str | None) -> dict[str, Any]:
    """`record` with its grade: "correct", and "grade_error" only while there is no grade."""
    graded = {k: v for k, v in record.items() if k != "grade_error"}
    graded["correct"] = correct
    if grade_error is not None:
        graded["grade_error"] = grade_error
    return graded


async def _regrade(store: ExperimentStore, stored: dict[str, StoredRun], grader: _AnswerGrader) -> int:
    """Grade the answers earlier runs left ungraded; their new records replace the old.
    Returns how many were graded."""
    regraded = 0
    for run_id, run in stored.items():
        for record in run.ungraded:
            correct, grade_error = await grader.grade(str(record["gold"]), record.get("answer"))
            if grade_error is None:
                store.writer(run_id).write(_with_grade(record, correct, None))
                regraded += 1
    return regraded


@dataclass(frozen=True)
class _InProcess:
    """The searching of `run_experiment`: the recipe's engines (or `backends`, left open)
    and one `Searcher` in this process."""

    backends: tuple[Any, Any] | None

    async def __call__(self, session: ExperimentSession) -> None:
        t0 = time.perf_counter()
        if self.backends is None:
            policy, verifier = await start_backends(session.prepared)
        else:
            policy, verifier = self.backends
        session.engine_seconds = time.perf_counter() - t0
        await _search(session, policy, verifier, close_backends=self.backends is None)


async def _search(session: ExperimentSession, policy: Any, verifier: Any, *, close_backends: bool) -> None:

    recipe = session.prepared.recipe
    todo = session.todo
    searcher = recipe_searcher(
        recipe,
        policy,
        verifier,
        close_backends=close_backends,
        kv_admission=recipe.execution.kv_admission,
        keep_trees=recipe.execution.keep_trees,
    )
    date_string = getattr(policy, "date_string", None)

    def jobs(batch: list[tuple[PlannedRun, Problem]]) -> Iterator[SearchJob]:
        for run, problem in batch:
            yield SearchJob(problem, run.strategy, run.seed)

    isolate = recipe.execution.isolate_runs and isinstance(verifier, ForgetsCaches)
    with session.searching():
        async with searcher:
            for number, batch in enumerate(one_run_at_a_time(todo) if isolate else [todo]):
                if number:
                    await verifier.forget_caches()  # this run's PRM cost is its own
                async for result in searcher.run_jobs(jobs(batch)):
                    run, problem = batch[result.index or 0]
                    await session.record(run, problem, result, date_string=date_string)


def recipe_searcher(
    recipe: Recipe,
    policy: Any,
    verifier: Any,
    *,
    close_backends: bool,
    kv_admission: bool = False,
    keep_trees: bool = False,
) -> Searcher:
    """The `Searcher` a study searches with (in this process or on a Ray worker): the
    recipe's limits and request bounds, the seeds the jobs'."""
    return Searcher(
        policy,
        verifier,
        limits=SearchLimits(
            max_solution_tokens=recipe.sampling.max_tokens, max_step_tokens=recipe.sampling.max_step_tokens
        ),
        max_concurrent_problems=recipe.execution.max_concurrent_problems,
        max_policy_requests=recipe.execution.max_policy_requests,
        max_verifier_requests=recipe.execution.max_verifier_requests,
        seed=None,
        keep_trees=keep_trees,
        close_backends=close_backends,
        kv_admission=kv_admission,
    )


def tree_record(
    result: SearchResult, problem: Problem, correct: bool | None, snapshot: dict[str, Any]
) -> dict[str, Any]:
    """One line of `trees/<run>.jsonl`: the search's tree (`snapshot`, `SearchTree.snapshot`),
    the node of each candidate and of the selected one, the answer and its grade."""
    index = selected_index(result)
    return {
        "unique_id": problem.unique_id,
        "answer": result.answer,
        "correct": correct,
        "candidates": [c.node_id for c in result.candidates],
        "selected": None if index is None else result.candidates[index].node_id,
        "tree": snapshot,
    }


def one_run_at_a_time(todo: list[tuple[PlannedRun, Problem]]) -> list[list[tuple[PlannedRun, Problem]]]:
    """The searches grouped by run, in plan order."""
    batches: dict[str, list[tuple[PlannedRun, Problem]]] = {}
    for run, problem in todo:
        batches.setdefault(run.run_id, []).append((run, problem))
    return list(batches.values())


def _write_report(out: Path) -> Path | None:

    try:
        files = write_report(build_report(load_experiment(out)), out / "report")
    except ExperimentError:
        return None  # nothing finished to report on (e.g. every problem failed before a record)
    return Path(files.html)
