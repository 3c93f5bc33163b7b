"""The search service behind `ttsearch serve`: one `Searcher` on engines started once.

Every request's problem is searched by the same `Searcher` (`Searcher.solve`, one call per
request, each in its own task): all problems in flight share the searcher's request gate
and the engines, so the engines batch the steps of different users' searches together.
`Searcher.run_jobs` is the batch API's shape (one iterable of jobs, one failure ends the
stream); a server needs each request to be cancelled alone when its client leaves, which a
task per request gives for free (cancelling `solve` aborts its engine requests).

The service knows nothing of HTTP: `plan` checks a `SearchRequest` against the model
(raising `ApiError`), `reserve` takes a queue place (raising `Overloaded`), `start` opens
the request's search tree for the live view (`trees`) and runs `run` in a task of its own;
`run` waits for a search slot and searches.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ttsearch.core.backend import Policy, Verifier
from ttsearch.core.results import SearchResult, selected_index
from ttsearch.core.search import SearchLimits
from ttsearch.core.searcher import Searcher
from ttsearch.core.strategy import Strategy
from ttsearch.errors import ProblemError, PromptTooLongError
from ttsearch.serve.admission import Admission, Reservation
from ttsearch.serve.catalog import DEFAULT_MAX_N, ModelCatalog
from ttsearch.serve.errors import ApiError, as_api_error
from ttsearch.serve.metering import EngineLoad, MeteredPolicy, MeteredVerifier, SearchProgress, credit_to
from ttsearch.serve.metrics import ServeMetrics
from ttsearch.serve.protocol import SearchRequest
from ttsearch.serve.trees import TreeRecord, TreeRegistry
from ttsearch.study.engines import start_backends
from ttsearch.study.preflight import prepare
from ttsearch.study.recipe import DatasetSpec, Recipe

__all__ = ["PlannedSearch", "SearchOutcome", "SearchService", "ServiceOptions", "served_policy_name"]


@dataclass(frozen=True, slots=True)
class ServiceOptions:
    """How much the service takes on at once (None: the recipe's `execution` setting)."""

    max_concurrent_problems: int | None = None  # searches running at once
    max_queue: int = 256  # requests waiting for a search slot; past it: 429
    max_n: int = DEFAULT_MAX_N  # the largest search budget a request may ask for
    keep_trees: int = 256  # finished requests' search trees the live view can still open (0: none)


@dataclass(frozen=True, slots=True)
class PlannedSearch:
    """A checked request, ready to search."""

    request: SearchRequest
    strategy: Strategy
    plain_sampling: bool  # the policy's own name: every sample is a choice
    seed: int  # the request's, or drawn for it (returned, so the answer can be reproduced)
    limits: SearchLimits
    prompt_tokens: int  # the templated problem's length


@dataclass(frozen=True, slots=True)
class SearchOutcome:
    plan: PlannedSearch
    result: SearchResult
    queue_seconds: float  # waiting for a search slot
    tree_id: str | None = None  # where the live view finds its tree (None: not kept)


def served_policy_name(recipe: Recipe) -> str:
    """The name plain sampling is served under: the recipe's policy model as vLLM would serve
    it (a hub id as it is, a local directory by its name; 'policy' for unnamed servers)."""
    model = recipe.policy.model
    if model is None:
        return "policy"
    return Path(model).name if model.startswith(("/", ".", "~")) else model


class SearchService:
    """Owns the engines (through the searcher) and every request's search on them."""

    def __init__(
        self,
        policy: Policy,
        verifier: Verifier | None,
        *,
        recipe: Recipe,
        options: ServiceOptions = ServiceOptions(),
    ) -> None:
        self.policy_load = EngineLoad()
        self.prm_load = EngineLoad()
        self.catalog = ModelCatalog(
            recipe, policy_name=served_policy_name(recipe), has_verifier=verifier is not None, max_n=options.max_n
        )
        sampling, execution = recipe.sampling, recipe.execution
        self.limits = SearchLimits(max_solution_tokens=sampling.max_tokens, max_step_tokens=sampling.max_step_tokens)
        self.searcher = Searcher(
            MeteredPolicy(policy, self.policy_load),
            None if verifier is None else MeteredVerifier(verifier, self.prm_load),
            limits=self.limits,
            max_policy_requests=execution.max_policy_requests,
            max_verifier_requests=execution.max_verifier_requests,
            seed=None,
            keep_trees=False,
        )
        max_running = options.max_concurrent_problems or execution.max_concurrent_problems
        self.admission = Admission(
            max_running=max_running, max_waiting=options.max_queue, retry_after=self._retry_after
        )
        self.trees = TreeRegistry(options.keep_trees)
        self.started = time.time()
        self._peak_running = 0
        self._mean_search_seconds = 1.0  # moving average, for Retry-After
        self.metrics = ServeMetrics()
        engines = {"policy": self.policy_load} | ({} if verifier is None else {"prm": self.prm_load})
        self.metrics.watch(
            queue_length=lambda: self.admission.waiting,
            problems_in_flight=lambda: self.admission.running,
            peak_problems_in_flight=lambda: self._peak_running,
            engines=engines,
        )

    @classmethod
    async def from_recipe(cls, recipe: Recipe, options: ServiceOptions = ServiceOptions()) -> SearchService:
        """Check the recipe, start (or connect to) its engines, serve its strategies."""
        # A server has no dataset: one toy problem keeps `prepare` from reading the recipe's.
        prepared = prepare(replace(recipe, dataset=DatasetSpec(source="toy", end=1)))
        policy, verifier = await start_backends(prepared)
        try:
            return cls(policy, verifier, recipe=recipe, options=options)
        except BaseException:
            await policy.close()
            if verifier is not None:
                await verifier.close()
            raise

    async def close(self) -> None:
        await self.searcher.close()

    # -- a request's life: plan, reserve, run ------------------------------------------

    def plan(self, request: SearchRequest) -> PlannedSearch:
        """Check the request against its model and the context; build its strategy.

        :raises ApiError: unknown model (404), a field that contradicts the search or an
            option out of range (400), a prompt longer than the context (400).
        """
        plain = self.catalog.is_plain_sampling(request.model)
        sampling = {k: v for k, v in (("temperature", request.temperature), ("top_p", request.top_p)) if v is not None}
        if plain:
            if request.search:
                raise ApiError(
                    f"search options apply to search models; {request.model!r} is the policy's plain sampling "
                    "(pick a search such as best_of_n-16)",
                    param="search",
                )
            strategy = self.catalog.sampling(request.n or 1, sampling)
        else:
            if request.n not in (None, 1):
                raise ApiError(
                    f"n={request.n}: a search returns one selected solution; its budget is the model's N "
                    f"({request.model}) or search.n, and every candidate is in the response's search.candidates",
                    param="n",
                )
            for name, value in sampling.items():
                if name in request.search and request.search[name] != value:
                    raise ApiError(
                        f"{name}={value} contradicts search.{name}={request.search[name]}; send one", param=name
                    )
            strategy = self.catalog.strategy(request.model, {**request.search, **sampling})
        prompt_tokens = len(self.searcher.policy.encode_problem(request.problem))
        context = self.searcher.policy.max_model_len
        if prompt_tokens >= context:
            raise ApiError(
                f"the prompt is {prompt_tokens} tokens but the policy's context is {context} tokens: "
                "nothing is left for the solution",
                param="messages" if request.endpoint == "chat" else "prompt",
                code="context_length_exceeded",
            )
        limits = self.limits
        if request.max_tokens is not None:
            if prompt_tokens + request.max_tokens > context:
                raise ApiError(
                    f"max_tokens={request.max_tokens} plus the prompt's {prompt_tokens} tokens is more than the "
                    f"policy's context of {context} tokens",
                    param="max_tokens",
                    code="context_length_exceeded",
                )
            limits = replace(limits, max_solution_tokens=request.max_tokens)
        seed = request.seed if request.seed is not None else secrets.randbelow(2**31)
        return PlannedSearch(request, strategy, plain, seed, limits, prompt_tokens)

    def reserve(self) -> Reservation:
        """A place in the queue. :raises Overloaded: the queue is full (429 with Retry-After)."""
        return self.admission.reserve()

    def start(
        self, reservation: Reservation, plan: PlannedSearch, progress: SearchProgress, *, tree_id: str
    ) -> asyncio.Task[SearchOutcome]:
        """`run` in a task of its own, its tree open for the live view under `tree_id` (the
        response's id) from now on, and ended with the task however it ends: a task
        cancelled before it ever ran ends its tree too."""
        tree = self.trees.open(tree_id, model=plan.request.model, problem=plan.request.problem)
        task = asyncio.create_task(self.run(reservation, plan, progress, tree))
        task.add_done_callback(lambda done: self._end_tree(tree, done))
        return task

    async def run(
        self, reservation: Reservation, plan: PlannedSearch, progress: SearchProgress, tree: TreeRecord | None = None
    ) -> SearchOutcome:
        """Wait for a search slot, then search; cancelling this cancels the search and its
        engine requests. Run it in a task of its own: the engine calls of that task are
        credited to `progress`. `tree`: the record the search's tree is shown through.

        :raises ApiError: the problem cannot be searched (400).
        :raises SearchError: an engine failed.
        """
        credit_to(progress)
        arrived = time.monotonic()
        async with reservation.running():
            progress.admitted = time.monotonic()
            progress.version += 1
            queued = progress.admitted - arrived
            self.metrics.queue_wait.observe(queued)
            self._peak_running = max(self._peak_running, self.admission.running)
            try:
                result = await self.searcher.solve(
                    plan.request.problem,
                    plan.strategy,
                    seed=plan.seed,
                    limits=plan.limits,
                    watch=None if tree is None else tree.watch,
                )
            except ProblemError as error:
                code = "context_length_exceeded" if isinstance(error.__cause__, PromptTooLongError) else None
                raise ApiError(f"the problem cannot be searched: {error}", code=code) from None
            except asyncio.CancelledError:
                self.metrics.cancelled.inc()
                self.metrics.spent_before_cancel(progress)
                raise
        self.metrics.spent(result.usage)
        self.metrics.search_seconds.observe(result.usage.seconds)
        self._mean_search_seconds = 0.9 * self._mean_search_seconds + 0.1 * result.usage.seconds
        # Without finished trees kept, the tree is gone by the time the client reads this.
        tree_id = tree.id if tree is not None and self.trees.keep > 0 else None
        return SearchOutcome(plan, result, queued, tree_id=tree_id)

    def _end_tree(self, tree: TreeRecord, task: asyncio.Task[SearchOutcome]) -> None:
        if task.cancelled():
            tree.end("cancelled")
        elif (error := task.exception()) is not None:
            tree.end("failed", error=as_api_error(error).message)
        else:
            outcome = task.result()
            result = outcome.result
            index = None if outcome.plan.plain_sampling else selected_index(result)
            selected = None if index is None else result.candidates[index].node_id
            tree.end("finished", answer=result.answer, selected=selected)
        self.trees.retire(tree)

    def _retry_after(self) -> int:
        """Seconds until a queue place is likely free: the queue's searches at the recent pace."""
        rounds = self.admission.waiting / self.admission.max_running + 1
        return min(60, max(1, math.ceil(self._mean_search_seconds * rounds)))

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "policy": self.catalog.policy_name,
            "running": self.admission.running,
            "queued": self.admission.waiting,
            "uptime_seconds": round(time.time() - self.started, 1),
        }
