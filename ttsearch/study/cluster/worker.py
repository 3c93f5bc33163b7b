"""`SearchWorker`: what one Ray actor runs, in its own process (no Ray import here: the
driver wraps the class with `ray.remote`).

A worker starts the recipe's engines once (`start_backends`, the one backend factory) and
holds one `Searcher`; the driver keeps up to `execution.max_concurrent_problems` searches
in flight on it, so its engines batch requests across all of them, as in one process.
With `execution.isolate_runs` a worker searches one run at a time and its PRM forgets its
caches when it moves to another run (`RunGate`), so each run's PRM computed tokens are its
own, as `run_experiment` keeps them.

An engine that fails (`SearchError`) leaves the worker useless: it closes what it can and
exits its process, so that Ray restarts it with fresh engines (an orderly actor exit would
not be restarted); the driver hands its searches out again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

from ttsearch.core.backend import ForgetsCaches
from ttsearch.core.results import SearchResult
from ttsearch.core.searcher import Searcher, SearchJob
from ttsearch.errors import SearchError
from ttsearch.study.engines import quiet_vllm_logs, start_backends
from ttsearch.study.preflight import Prepared
from ttsearch.study.runner import recipe_searcher

__all__ = ["Found", "RunGate", "SearchWorker", "WorkerInfo"]

logger = logging.getLogger(__name__)

ENGINE_FAILURE_EXIT = 70  # the worker's exit status after an engine failure (Ray restarts it)


@dataclass(frozen=True)
class WorkerInfo:
    """A started worker, as the driver sees it."""

    pid: int  # of the actor's process (a restarted worker has a new one)
    node: str  # host name of its node
    date_string: str | None  # the policy's pinned chat-template date (for the records)
    engine_seconds: float  # its engines' start-up


@dataclass(frozen=True)
class Found:
    """What one search on a worker sends back: the result (its tree left behind: the live
    tree does not travel), the tree's snapshot when the recipe keeps trees, and the worker
    (a worker that died idle and was restarted by Ray shows its new process)."""

    result: SearchResult
    tree: dict[str, Any] | None
    worker: WorkerInfo


class RunGate:
    """Lets one run's searches in at a time, first come first served.

    A search of another run waits until every search of the current run has finished;
    then `switch` runs (the PRM forgets its caches) before any search of the new run
    starts. Searches queue in arrival order, so a search waiting for its run is not
    overtaken forever by later searches of the current one.
    """

    def __init__(self, switch: Callable[[], Awaitable[None]]) -> None:
        self._switch = switch
        self._current: int | None = None  # the run searching now (None: none yet)
        self._running = 0
        self._switching = False  # `switch` is running: nobody is let in
        self._waiting: deque[tuple[int, asyncio.Future[bool]]] = deque()

    @asynccontextmanager
    async def entered(self, run: int) -> AsyncIterator[None]:
        ticket: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append((run, ticket))
        self._admit()
        try:
            switch = await ticket
        except asyncio.CancelledError:
            if not ticket.done() or ticket.cancelled():
                ticket.cancel()  # still queued: `_admit` drops it
            else:  # let in just as it was cancelled: give the place back
                self._switching = self._switching and not ticket.result()
                self._leave()
            raise
        try:
            if switch:
                try:
                    await self._switch()
                finally:
                    self._switching = False
                    self._admit()
            yield
        finally:
            self._leave()

    def _leave(self) -> None:
        self._running -= 1
        self._admit()

    def _admit(self) -> None:
        while self._waiting and not self._switching:
            run, ticket = self._waiting[0]
            if ticket.cancelled():
                self._waiting.popleft()
                continue
            if run != self._current and self._running:
                return  # the current run drains first
            self._waiting.popleft()
            self._running += 1
            switch = self._current is not None and run != self._current  # a fresh worker's caches are empty
            self._current = run
            self._switching = switch
            ticket.set_result(switch)


class SearchWorker:
    """The engines and searcher of one Ray actor; `search` takes (run, problem) indices
    into `prepared` (sent once, when the actor is created)."""

    def __init__(self, prepared: Prepared, *, verbose: bool = False) -> None:
        self._prepared = prepared
        self._verbose = verbose
        self._searcher: Searcher | None = None
        self._info: WorkerInfo | None = None
        self._starting = asyncio.Lock()
        self._gate: RunGate | None = None

    async def start(self) -> WorkerInfo:
        """Start the engines (once per process; later calls return at once)."""
        async with self._starting:
            if self._info is None:
                self._info = await self._start()
            return self._info

    async def search(self, run: int, problem: int) -> Found:
        """Search problem `problem` in run `run`; a problem that fails alone comes back as
        a result with `error`, as in `run_experiment`."""
        info = await self.start()
        assert self._searcher is not None
        planned = self._prepared.runs[run]
        job = SearchJob(self._prepared.problems[problem], planned.strategy, planned.seed)
        try:
            if self._gate is None:
                result = await _only_result(self._searcher, job)
            else:
                async with self._gate.entered(run):
                    result = await _only_result(self._searcher, job)
        except SearchError:
            await self._exit_for_restart()
            raise  # not reached
        tree = None if result.tree is None else result.tree.snapshot()
        return Found(replace(result, tree=None), tree, info)

    async def pid(self) -> int:
        """This actor's process (a new one after Ray restarts it); starts nothing."""
        return os.getpid()

    async def close(self) -> None:
        """Close the engines (before the driver kills the actor: their processes end too)."""
        if self._searcher is not None:
            searcher, self._searcher = self._searcher, None
            await searcher.close()

    async def _start(self) -> WorkerInfo:
        if not self._verbose:
            quiet_vllm_logs()
        started = time.perf_counter()
        policy, verifier = await start_backends(self._prepared)
        recipe = self._prepared.recipe
        # The driver keeps at most max_concurrent_problems searches in flight here, each as
        # its own `run_jobs` call: the bound is the driver's.
        self._searcher = recipe_searcher(
            recipe, policy, verifier, close_backends=True, keep_trees=recipe.execution.keep_trees
        )
        if recipe.execution.isolate_runs and isinstance(verifier, ForgetsCaches):
            self._gate = RunGate(verifier.forget_caches)
        return WorkerInfo(
            pid=os.getpid(),
            node=socket.gethostname(),
            date_string=getattr(policy, "date_string", None),
            engine_seconds=time.perf_counter() - started,
        )

    async def _exit_for_restart(self) -> None:
        logger.error("an engine failed: closing this worker so that Ray restarts it with fresh engines")
        try:
            await asyncio.wait_for(self.close(), timeout=30)
        except BaseException as error:  # exiting anyway: the engines' processes may be gone already
            logger.error("closing the engines failed too: %r", error)
        os._exit(ENGINE_FAILURE_EXIT)


async def _only_result(searcher: Searcher, job: SearchJob) -> SearchResult:
    """One job through `run_jobs`: a problem that fails alone becomes a result with
    `error` (as in a run of many), an engine failure raises `SearchError`."""
    results = [result async for result in searcher.run_jobs([job])]
    assert len(results) == 1, "one job, one result"
    return results[0]
