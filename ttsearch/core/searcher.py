"""The public entry point: `Searcher` runs strategies on a policy (and verifier) for many problems.

    async with Searcher(policy, verifier) as searcher:
        result = await searcher.solve("What is 1 + 1?", BeamSearch(n=16))
        async for result in searcher.solve_all(problems, DVTS(n=16)):
            ...

All problems of `solve_all` search at once (up to `max_concurrent_problems`), so the
engines batch requests across problems; results stream back as each problem finishes.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import AsyncIterator, Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any

from ttsearch.core.backend import KVCacheSized, Policy, RevisionPolicy, Verifier
from ttsearch.core.results import Candidate, SearchResult, pick_answer
from ttsearch.core.scheduler import RequestGate, Usage
from ttsearch.core.search import ProblemSearch, SearchLimits
from ttsearch.core.strategy import Strategy
from ttsearch.core.tree import SearchTree
from ttsearch.errors import BackendError, ProblemError, PromptTooLongError, RequestFailedError, SearchError
from ttsearch.evaluation.datasets import Problem

ProblemInput = str | Problem


@dataclass(frozen=True, slots=True)
class SearchJob:
    """One problem to search with one strategy: the unit `Searcher.run_jobs` admits.

    `seed`: the run seed of this job's requests (None: the searcher's), so runs of
    several seeds share one searcher and its warm engines.
    """

    problem: ProblemInput
    strategy: Strategy
    seed: int | None = None


class Searcher:
    """Runs search strategies over a policy and an optional verifier.

    Backends passed in are closed by `close()` (and by `async with`) unless
    `close_backends=False`, so engines built by the caller can outlive the searcher.
    """

    def __init__(
        self,
        policy: Policy,
        verifier: Verifier | None = None,
        *,
        limits: SearchLimits | None = None,
        max_concurrent_problems: int = 64,
        max_policy_requests: int = 512,
        max_verifier_requests: int = 1024,
        seed: int | None = 0,
        keep_trees: bool = True,
        close_backends: bool = True,
        kv_admission: bool = False,
    ) -> None:
        if max_concurrent_problems < 1:
            raise ValueError(f"max_concurrent_problems must be >= 1, got {max_concurrent_problems}")
        self.policy = policy
        self.verifier = verifier
        self.limits = limits or SearchLimits()
        self.max_concurrent_problems = max_concurrent_problems
        self.seed = seed
        self.keep_trees = keep_trees
        self._gate = RequestGate(max_policy_requests, max_verifier_requests)
        self._close_backends = close_backends
        self._closed = False
        # Admission by KV cache (`kv_admission`; see `_working_set`) and request priority.
        self.kv_admission = kv_admission
        self._admitted = 0  # problems admitted so far: their priority at the request gate
        self._finished_tokens = 0  # prompt + candidate tokens, over finished problems' candidates
        self._finished_candidates = 0

    async def __aenter__(self) -> Searcher:
        self._check_open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._close_backends:
            try:
                await self.policy.close()
            finally:  # a policy that fails to close must not leave the verifier's engine running
                if self.verifier is not None:
                    await self.verifier.close()

    def _check_open(self) -> None:
        if self._closed:
            raise SearchError("searcher is closed")

    # -- public API ------------------------------------------------------------------------

    async def solve(
        self,
        problem: ProblemInput,
        strategy: Strategy,
        *,
        seed: int | None = None,
        limits: SearchLimits | None = None,
        watch: Callable[[SearchTree], None] | None = None,
    ) -> SearchResult:
        """Search one problem (`seed`, `limits`: default the searcher's; a server sets them per request).

        `watch`, if given, is called with the problem's tree as soon as it is built, before
        the first request: the caller can then follow the search as it grows (a server's
        live view), whether or not the result keeps the tree (`keep_trees`).

        :raises ProblemError: the problem cannot be searched (empty, prompt too long).
        :raises SearchError: an engine failed.
        """
        self._check_open()
        self._check_strategy(strategy)
        return await self._solve(problem, strategy, index=None, seed=seed, limits=limits, watch=watch)

    async def solve_all(
        self, problems: Iterable[ProblemInput], strategy: Strategy, *, seed: int | None = None
    ) -> AsyncIterator[SearchResult]:
        """Search many problems at once; yield each result as soon as it is finished.

        A problem that cannot run (or whose search raised) yields a result with `error`
        set while the others go on; an engine failure stops the whole run with `SearchError`.
        `result.index` is the problem's position in `problems`. `seed`: this run's seed
        (default: the searcher's).
        """
        self._check_strategy(strategy)
        async for result in self.run_jobs(SearchJob(p, strategy, seed) for p in problems):
            yield result

    async def run_jobs(self, jobs: Iterable[SearchJob]) -> AsyncIterator[SearchResult]:
        """Search jobs of any strategies and seeds through one admission bound.

        At most `max_concurrent_problems` jobs search at once, admitted in the order given
        (the iterable is read lazily), so the engines see one stream of work across runs.
        Results come in completion order; `result.index` is the job's position. Failures
        behave as in `solve_all`.
        """
        self._check_open()
        batch_state: dict[Hashable, Any] = {}  # what strategies share across this call's problems
        pending = iter(enumerate(jobs))
        running: set[asyncio.Task[SearchResult]] = set()

        reserved: dict[asyncio.Task[SearchResult], int] = {}  # KV tokens each running job may use
        budget = self._kv_budget()
        held: list[tuple[int, SearchJob]] = []  # read from `jobs`, not admitted yet

        def refill() -> None:
            while len(running) < self.max_concurrent_problems:
                item = held.pop() if held else next(pending, None)
                if item is None:
                    return
                index, job = item
                self._check_strategy(job.strategy)
                need = self._working_set(job.strategy)
                if budget is not None and running and sum(reserved.values()) + need > budget:
                    held.append(item)  # the caches are full: let running problems finish first
                    return
                task = asyncio.create_task(self._solve_or_fail(job, index, batch_state))
                running.add(task)
                reserved[task] = need

        try:
            refill()
            while running:
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    running.discard(task)
                    reserved.pop(task, None)
                finished, failure = _split_batch(done)
                # Problems that finished beside an engine failure are yielded first: the
                # caller records them, so a resumed run does not redo them.
                for result in finished:
                    yield result
                if failure is not None:
                    raise failure  # the rest are cancelled below
                refill()
        finally:
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)

    # -- internals -------------------------------------------------------------------------

    def _next_priority(self) -> int:
        self._admitted += 1
        return self._admitted

    def _kv_budget(self) -> int | None:
        """Tokens both engines' KV caches hold (the smaller), when `kv_admission` is on and
        the backends say (`KVCacheSized`, as the vLLM backends are); else None: no KV bound."""
        if not self.kv_admission:
            return None
        known = [size for size in map(_kv_cache_size, (self.policy, self.verifier)) if size is not None]
        return min(known) if known else None

    def _working_set(self, strategy: Strategy) -> int:
        """KV tokens one problem keeps live, estimated: its distinct prefixes (N for
        sampling, N/M kept beams for stepwise strategies, whose M children share a parent)
        times the mean prompt + solution length of the finished problems' candidates
        (before any has finished: half the solution limit)."""
        if self._finished_candidates:
            length = self._finished_tokens / self._finished_candidates
        else:
            length = min(self.limits.max_solution_tokens, self.policy.max_model_len) / 2
        return int(strategy.live_prefixes * length)

    def _learn(self, prompt_length: int, candidates: tuple[Candidate, ...]) -> None:
        """Add a finished problem's candidates to the length `_working_set` estimates with.
        Called with the tree's prompt length while the tree is at hand, so the estimate
        is the same whether or not results keep their trees (`keep_trees`)."""
        self._finished_tokens += sum(prompt_length + c.num_tokens for c in candidates)
        self._finished_candidates += len(candidates)

    def _check_strategy(self, strategy: Strategy) -> None:
        if not isinstance(strategy, Strategy):
            raise TypeError(f"strategy must be a ttsearch Strategy, got {type(strategy).__name__}")
        if strategy.requires_revision_prompts() and not isinstance(self.policy, RevisionPolicy):
            raise TypeError(
                f"strategy {strategy.name} prompts new attempts with earlier ones, but the policy "
                f"({type(self.policy).__name__}) cannot render revision prompts (no encode_revision)"
            )

    async def _solve_or_fail(self, job: SearchJob, index: int, batch_state: dict[Hashable, Any]) -> SearchResult:
        problem, strategy = job.problem, job.strategy
        usage = Usage()  # filled as the search goes, so a failure still reports what it spent
        started = time.perf_counter()
        try:
            return await self._solve(
                problem, strategy, index=index, usage=usage, seed=job.seed, batch_state=batch_state
            )
        except SearchError:
            raise  # an engine failed: every problem is affected
        except Exception as error:
            message = str(error) if isinstance(error, ProblemError) else f"{type(error).__name__}: {error}"
            text = problem.problem if isinstance(problem, Problem) else str(problem)
            usage.seconds = time.perf_counter() - started
            return SearchResult(
                problem=text,
                strategy=strategy.name,
                selection=strategy.selection,
                answer=None,
                candidates=(),
                usage=usage,
                tree=None,
                index=index,
                error=message,
            )

    async def _solve(
        self,
        problem: ProblemInput,
        strategy: Strategy,
        *,
        index: int | None,
        usage: Usage | None = None,
        seed: int | None = None,
        batch_state: dict[Hashable, Any] | None = None,
        limits: SearchLimits | None = None,
        watch: Callable[[SearchTree], None] | None = None,
    ) -> SearchResult:
        text, key = _problem_text_and_key(problem)
        started = time.perf_counter()
        tree = self._new_tree(text, batch_state)
        if watch is not None:
            watch(tree)
        search = ProblemSearch(
            tree,
            strategy,
            self.policy,
            self.verifier,
            limits=self.limits if limits is None else limits,
            gate=self._gate,
            seed=self.seed if seed is None else seed,
            problem_key=key,
            usage=usage,
            priority=self._next_priority(),
        )
        try:
            nodes = await search.run()
        except (PromptTooLongError, RequestFailedError) as error:  # this problem's fault, not the engine's
            raise ProblemError(f"problem {key}: {error}") from error
        except BackendError as error:
            raise SearchError(f"problem {key}: model engine failed: {error}") from error
        search.usage.seconds = time.perf_counter() - started
        decided = strategy.resolved(tree)  # a delegating strategy scores with what it ran
        candidates = tuple(Candidate.from_node(node, decided.score(node)) for node in nodes)
        self._learn(tree.prompt_length, candidates)
        return SearchResult(
            problem=text,
            strategy=strategy.name,
            selection=decided.selection,
            answer=pick_answer(decided.selection, candidates),
            candidates=candidates,
            usage=search.usage,
            tree=tree if self.keep_trees else None,
            index=index,
        )

    def _new_tree(self, text: str, batch_state: dict[Hashable, Any] | None) -> SearchTree:
        if not text.strip():
            raise ProblemError("problem text is empty")
        prompt = self.policy.encode_problem(text)
        limit = self.policy.max_model_len
        if len(prompt) >= limit:
            raise ProblemError(
                f"prompt is {len(prompt)} tokens but the policy's context is {limit}: nothing left to generate"
            )
        return SearchTree(text, prompt, batch_state=batch_state)


def _kv_cache_size(backend: object) -> int | None:
    """The tokens `backend`'s KV cache holds, where it says (a positive number)."""
    if not isinstance(backend, KVCacheSized):
        return None
    size = backend.kv_cache_tokens
    return size if isinstance(size, int) and size > 0 else None


def _split_batch(done: Iterable[asyncio.Task[SearchResult]]) -> tuple[list[SearchResult], BaseException | None]:
    """The results of a batch of finished tasks, in problem order, and the first failure
    among them (an engine failure, or a cancellation), if any."""
    finished: list[SearchResult] = []
    failures: list[BaseException] = []
    for task in done:
        if task.cancelled():
            failures.append(asyncio.CancelledError())
        elif (error := task.exception()) is not None:
            failures.append(error)
        else:
            finished.append(task.result())
    finished.sort(key=lambda result: result.index or 0)
    return finished, failures[0] if failures else None


def _problem_text_and_key(problem: ProblemInput) -> tuple[str, str]:
    if isinstance(problem, Problem):
        return problem.problem, problem.unique_id
    if not isinstance(problem, str):
        raise TypeError(f"a problem must be a str or a Problem, got {type(problem).__name__}")
    return problem, f"crc{zlib.crc32(problem.encode()):08x}"
