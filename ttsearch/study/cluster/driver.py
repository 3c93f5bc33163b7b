"""The driver of a study on Ray: the experiment's searches spread over Ray workers, the
records written here, by this process alone.

Everything around the searching is `execute_experiment`'s (the checks, the experiment
directory, resume, regrading, the report), so a directory half done on Ray resumes on one
machine and the reverse. The searching: one `SearchWorker` actor per worker, each given up
to `execution.max_concurrent_problems` searches at once by as many slots; a slot whose
search comes back asks the `Dispatcher` for the next (dynamic pull). Results go to one
writer task, the single writer of the directory (`ExperimentSession.record`).

A worker that dies fails the searches it held; they are handed out again (`Dispatcher`),
Ray restarts the actor (`ray.max_restarts`), and the driver starts its engines again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError

from ttsearch.core.results import SearchResult
from ttsearch.core.scheduler import Usage
from ttsearch.errors import BackendError, ExperimentError
from ttsearch.study.cluster.connect import actor_options, ray_cluster, worker_count
from ttsearch.study.cluster.dispatch import Dispatcher, WorkItem
from ttsearch.study.cluster.restarts import RestartCount
from ttsearch.study.cluster.worker import Found, SearchWorker, WorkerInfo
from ttsearch.study.recipe import RaySpec
from ttsearch.study.runner import ExperimentSession

__all__ = ["RayExecutor"]

logger = logging.getLogger(__name__)

CLOSE_SECONDS = 60  # for a worker to close its engines at the end before it is killed
PID_SECONDS = 60  # for a worker Ray is restarting to answer at the end
RESTART_PAUSE = 1.0  # between tries to start a worker that keeps dying


@dataclass(eq=False)
class _Worker:
    index: int
    actor: Any  # the Ray actor handle
    info: WorkerInfo | None = None  # None: starting (or restarting), or gone
    died: asyncio.Event = field(default_factory=asyncio.Event)  # this incarnation died
    gone: bool = False  # Ray will not restart it


@dataclass(frozen=True)
class RayExecutor:
    """Searches an `ExperimentSession` on Ray workers (an `Executor` of `execute_experiment`)."""

    spec: RaySpec
    verbose: bool = False

    async def __call__(self, session: ExperimentSession) -> None:
        started = time.perf_counter()
        with ray_cluster(self.spec, workers=self.spec.workers, verbose=self.verbose) as where:
            workers = worker_count(self.spec)
            logger.info("searching on %s with %d workers", where, workers)
            await _Drive(session, self.spec, workers, self.verbose, started).run()


class _Drive:
    """One session's searching on the cluster (a fresh object per session)."""

    def __init__(self, session: ExperimentSession, spec: RaySpec, workers: int, verbose: bool, started: float) -> None:
        self.session = session
        self.spec = spec
        self.started = started
        prepared = session.prepared
        run_index = {run.run_id: i for i, run in enumerate(prepared.runs)}
        problem_index = {p.unique_id: i for i, p in enumerate(prepared.problems)}
        items = [WorkItem(run_index[run.run_id], problem_index[p.unique_id]) for run, p in session.todo]
        self.dispatcher = Dispatcher(items, workers)
        self.capacity = prepared.recipe.execution.max_concurrent_problems
        remote = ray.remote(SearchWorker).options(**actor_options(spec, max_concurrency=self.capacity + 4))
        self.workers = [_Worker(i, remote.remote(prepared, verbose=verbose)) for i in range(workers)]
        self.changed = asyncio.Condition()  # the dispatcher or a worker's state changed
        # (item, result, the worker's date string, the tree's snapshot when trees are kept)
        self.results: asyncio.Queue[tuple[WorkItem, SearchResult, str | None, dict[str, Any] | None] | None] = (
            asyncio.Queue()
        )
        self.done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.first_up = asyncio.Event()  # a worker's engines are up: searching begins
        self.restarts = RestartCount(workers)
        self.gave_up = 0

    async def run(self) -> None:
        writer = asyncio.create_task(self._write())
        tasks = [asyncio.create_task(self._keep_working(worker)) for worker in self.workers]
        try:
            up: asyncio.Future[Any] = asyncio.ensure_future(self.first_up.wait())
            await asyncio.wait([up, self.done], return_when=asyncio.FIRST_COMPLETED)
            up.cancel()
            self.session.engine_seconds = time.perf_counter() - self.started
            with self.session.searching():
                await self._show()
                await self.done  # every item came back or was given up; or a worker task failed
                self.results.put_nowait(None)
                await writer  # every result recorded
            await self._count_unseen_restarts()
        finally:
            # First, before any await: a stop (SIGTERM) cancels the awaits below too.
            self.session.extra_stats["ray"] = {
                "workers": len(self.workers),
                "restarts": self.restarts.total,
                "given_up": self.gave_up,
            }
            for task in (*tasks, writer):
                task.cancel()
            await asyncio.gather(*tasks, writer, return_exceptions=True)
            await self._close_workers()

    # -- one worker: start, serve, restart after a death ---------------------------------

    async def _keep_working(self, worker: _Worker) -> None:
        """Start `worker` (again after each death) and keep its slots busy until the work is
        done or Ray will not restart it. Ray restarts a dead actor by itself; `start` then
        waits for the new process and starts its engines. Calls to an actor that is dead
        for good fail at once, so `start` failing many times in a row means gone."""
        try:
            try:  # its process before the engines start: a death while starting is seen as one
                self.restarts.answered(worker.index, await _pid(worker))
            except RayActorError:
                pass  # it died being created: `start` below waits for Ray's restart
            failed_starts = 0  # in a row
            while not self.done.done():
                try:
                    info = await worker.actor.start.remote()
                except RayActorError as error:  # died while starting, restarting, or dead for good
                    self.restarts.died(worker.index)
                    failed_starts += 1
                    if self.spec.max_restarts != -1 and failed_starts > self.spec.max_restarts + 1:
                        self.restarts.gone(worker.index)
                        await self._retire(worker, error)
                        return
                    await asyncio.sleep(RESTART_PAUSE)
                    continue
                except RayTaskError as error:  # the engines cannot start: no worker could
                    raise BackendError(f"Ray worker {worker.index} could not start its engines: {error}") from None
                failed_starts = 0
                self.restarts.answered(worker.index, info.pid)
                worker.info, worker.died = info, asyncio.Event()
                self.first_up.set()
                await self._show()
                await asyncio.gather(*(self._slot(worker) for _ in range(self.capacity)))
                if not worker.died.is_set():
                    return  # no work left
                worker.info = None  # Ray starts the actor again; `start` waits for it
                await self._show()
        except BaseException as error:
            if not isinstance(error, asyncio.CancelledError) and not self.done.done():
                self.done.set_exception(error)
            raise

    async def _slot(self, worker: _Worker) -> None:
        """One search at a time on `worker`, asking for the next as each comes back."""
        died = worker.died
        while (item := await self._next(worker, died)) is not None:
            ref = worker.actor.search.remote(item.run, item.problem)
            await self._show()
            try:
                found: Found = await ref
            except RayActorError as error:
                self.restarts.died(worker.index)
                died.set()  # its other slots stop asking; their searches fail with it
                await self._failed(worker, item, f"the worker died ({_first_line(error)})")
                return
            except RayTaskError as error:
                await self._failed(worker, item, _first_line(error.cause if error.cause is not None else error))
                continue
            if found.worker.pid != self.restarts.pid(worker.index):  # it died idle: Ray restarted it unseen
                self.restarts.answered(worker.index, found.worker.pid)
                worker.info = found.worker
                await self._show()
            self.dispatcher.returned(worker.index, item)
            self.results.put_nowait((item, found.result, found.worker.date_string, found.tree))
            await self._changed()

    async def _next(self, worker: _Worker, died: asyncio.Event) -> WorkItem | None:
        async with self.changed:
            while True:
                if died.is_set() or self.done.done():
                    return None
                item = self.dispatcher.take(worker.index)
                if item is not None:
                    return item
                if self.dispatcher.finished:
                    self._finish()
                    return None
                await self.changed.wait()

    async def _failed(self, worker: _Worker, item: WorkItem, cause: str) -> None:
        logger.warning("search %s failed on Ray worker %d: %s", self._name(item), worker.index, cause)
        if self.dispatcher.failed(worker.index, item, cause):
            self.gave_up += 1
            self.results.put_nowait((item, self._error_result(item), None, None))
        await self._changed()

    async def _retire(self, worker: _Worker, error: BaseException | None) -> None:
        logger.error("Ray worker %d is gone for good (%s)", worker.index, error or "restarts used up")
        worker.gone, worker.info = True, None
        self.dispatcher.retire(worker.index)
        if not self.dispatcher.live_workers and not self.dispatcher.finished and not self.done.done():
            self.done.set_exception(
                ExperimentError(
                    f"every Ray worker died and Ray restarts none (ray.max_restarts {self.spec.max_restarts}); "
                    f"{self.dispatcher.pending} searches left: rerun the command to resume"
                )
            )
        await self._changed()

    # -- the single writer -------------------------------------------------------------------

    async def _write(self) -> None:
        prepared = self.session.prepared
        try:
            while (entry := await self.results.get()) is not None:
                item, result, date_string, tree = entry
                run, problem = prepared.runs[item.run], prepared.problems[item.problem]
                await self.session.record(run, problem, result, date_string=date_string, tree=tree)
        except BaseException as error:
            if not isinstance(error, asyncio.CancelledError) and not self.done.done():
                self.done.set_exception(error)
            raise

    def _error_result(self, item: WorkItem) -> SearchResult:
        """The record of a search given up: no candidates, the cause of every failed try."""
        run, problem = self.session.prepared.runs[item.run], self.session.prepared.problems[item.problem]
        workers = sorted(item.failed_on)
        return SearchResult(
            problem=problem.problem,
            strategy=run.strategy.name,
            selection=run.strategy.selection,
            answer=None,
            candidates=(),
            usage=Usage(),
            tree=None,
            error=f"search failed on Ray worker(s) {workers}, given up: {item.cause}",
        )

    # -- bookkeeping -------------------------------------------------------------------------

    async def _changed(self) -> None:
        if self.dispatcher.finished:
            self._finish()
        async with self.changed:
            self.changed.notify_all()
        await self._show()

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    async def _show(self) -> None:
        if self.session.progress is None:
            return
        flights = [None if w.info is None else self.dispatcher.in_flight(w.index) for w in self.workers]
        self.session.progress.set_workers(flights, self.restarts.total)

    async def _count_unseen_restarts(self) -> None:
        """A worker that died idle near the end (no search sent to it since) was restarted
        by Ray without the driver seeing it: its process id tells."""
        seen = [w for w in self.workers if not w.gone and self.restarts.pid(w.index) is not None]
        pids = await asyncio.gather(
            *(asyncio.wait_for(_pid(w), PID_SECONDS) for w in seen),
            return_exceptions=True,
        )
        for worker, pid in zip(seen, pids, strict=True):
            if isinstance(pid, int):
                self.restarts.answered(worker.index, pid)

    async def _close_workers(self) -> None:
        live = [w for w in self.workers if not w.gone]
        closes = [w.actor.close.remote() for w in live if w.info is not None]
        if closes:
            try:
                await asyncio.wait_for(asyncio.gather(*closes, return_exceptions=True), CLOSE_SECONDS)
            except TimeoutError:
                logger.warning("Ray workers did not close their engines in %d s: killing them", CLOSE_SECONDS)
        for worker in self.workers:
            ray.kill(worker.actor, no_restart=True)

    def _name(self, item: WorkItem) -> str:
        prepared = self.session.prepared
        return f"{prepared.runs[item.run].run_id}/{prepared.problems[item.problem].unique_id}"


async def _pid(worker: _Worker) -> int:
    pid: int = await worker.actor.pid.remote()
    return pid


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0] if "\n" in text else text
