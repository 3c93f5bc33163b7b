"""`run_experiment`: every (strategy, N, seed) run of a recipe through one `Searcher`.

The engines start once. All unfinished (run, problem) searches form one stream that the
searcher admits `execution.max_concurrent_problems` at a time, so the engines see one
large batch of work across runs and seeds instead of one run after another. Each problem's
record is appended to its run's file the moment it finishes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ttsearch.core.scheduler import Usage
from ttsearch.core.search import SearchLimits
from ttsearch.core.searcher import Searcher, SearchJob
from ttsearch.errors import ExperimentError
from ttsearch.evaluation.datasets import Problem
from ttsearch.evaluation.grading import is_equivalent
from ttsearch.study.benchmark import result_record
from ttsearch.study.engines import quiet_vllm_logs, start_backends
from ttsearch.study.plan import PlannedRun
from ttsearch.study.preflight import Prepared, prepare
from ttsearch.study.progress import ExperimentProgress
from ttsearch.study.recipe import Recipe
from ttsearch.study.report import build_report, load_experiment, write_report
from ttsearch.study.store import ExperimentStore

__all__ = ["ExperimentSummary", "run_experiment"]


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


async def run_experiment(
    recipe: Recipe,
    out_dir: str | Path,
    *,
    shard: tuple[int, int] | None = None,
    restart: bool = False,
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
    `backends`: a (policy, verifier) pair to use instead of the recipe's models (left
    open; e.g. engines you keep warm across experiments, or scripted ones in tests).
    `prepared`: `prepare(recipe, shard=shard)` if the caller has already checked it.
    """
    if prepared is None:
        prepared = prepare(recipe, shard=shard)
    out = Path(out_dir)
    store = ExperimentStore(out, recipe, prepared.runs, shard=shard, fsync_seconds=recipe.execution.fsync_seconds)
    store.check(restart=restart)  # before any engine starts
    if not verbose:
        quiet_vllm_logs()
    done = store.open(restart=restart)
    todo = [(run, p) for run in prepared.runs for p in prepared.problems if p.unique_id not in done[run.run_id]]
    resumed = len(prepared.runs) * len(prepared.problems) - len(todo)
    usage, failed, seconds, engine_seconds = Usage(), 0, 0.0, 0.0
    finished = False
    try:
        if todo:
            t0 = time.perf_counter()
            if backends is None:
                policy, verifier = await start_backends(prepared)
            else:
                policy, verifier = backends
            engine_seconds = time.perf_counter() - t0
            failed, seconds = await _search(
                prepared, store, policy, verifier, todo, done, usage, progress, close_backends=backends is None
            )
        finished = True
    finally:
        store.close(
            finished=finished,
            stats={
                "searched": len(todo) if finished else None,
                "engine_seconds": round(engine_seconds, 1),
                "search_seconds": round(seconds, 1),
            },
        )
    html = _write_report(out) if report else None
    return ExperimentSummary(
        out_dir=out,
        runs=len(prepared.runs),
        problems=len(prepared.problems),
        searched=len(todo),
        resumed=resumed,
        failed=failed,
        usage=usage,
        seconds=seconds,
        engine_seconds=engine_seconds,
        report_html=html,
    )


async def _search(
    prepared: Prepared,
    store: ExperimentStore,
    policy: Any,
    verifier: Any,
    todo: list[tuple[PlannedRun, Problem]],
    done: dict[str, set[str]],
    usage: Usage,
    progress: bool,
    *,
    close_backends: bool,
) -> tuple[int, float]:

    recipe = prepared.recipe
    limits = SearchLimits(
        max_solution_tokens=recipe.sampling.max_tokens, max_step_tokens=recipe.sampling.max_step_tokens
    )
    searcher = Searcher(
        policy,
        verifier,
        limits=limits,
        max_concurrent_problems=recipe.execution.max_concurrent_problems,
        max_policy_requests=recipe.execution.max_policy_requests,
        max_verifier_requests=recipe.execution.max_verifier_requests,
        seed=None,
        keep_trees=False,
        close_backends=close_backends,
        kv_admission=recipe.execution.kv_admission,
    )
    date_string = getattr(policy, "date_string", None)
    left = {run.run_id: len(prepared.problems) - len(done[run.run_id]) for run in prepared.runs}
    bar = ExperimentProgress(
        total=len(prepared.runs) * len(prepared.problems),
        done=sum(map(len, done.values())),
        runs=len(prepared.runs),
        runs_done=sum(v == 0 for v in left.values()),
        enabled=progress,
    )

    def jobs() -> Iterator[SearchJob]:
        for run, problem in todo:
            yield SearchJob(problem, run.strategy, run.seed)

    failed = 0
    started = time.perf_counter()
    try:
        async with searcher:
            async for result in searcher.run_jobs(jobs()):
                run, problem = todo[result.index or 0]
                correct = result.answer is not None and await asyncio.to_thread(
                    is_equivalent, problem.answer, result.answer
                )
                record = result_record(result, problem, run.strategy, correct, date_string=date_string)
                record.update(
                    run_id=run.run_id,
                    label=run.label,
                    strategy=run.strategy_name,
                    kind=run.kind,
                    n=run.n,
                    seed=run.seed,
                    budgets=list(run.budgets),
                )
                store.writer(run.run_id).write(record)
                usage.add(result.usage)
                failed += result.error is not None
                left[run.run_id] -= 1
                bar.update(result.usage, run_finished=left[run.run_id] == 0)
    finally:
        bar.close()
    return failed, time.perf_counter() - started


def _write_report(out: Path) -> Path | None:

    try:
        files = write_report(build_report(load_experiment(out)), out / "report")
    except ExperimentError:
        return None  # nothing finished to report on (e.g. every problem failed before a record)
    return Path(files.html)
