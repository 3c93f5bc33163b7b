"""Who is on the engines right now: backends that count their calls, per engine and per request.

`MeteredPolicy` / `MeteredVerifier` wrap the real backends (vLLM engines or servers) and
count the calls in flight (`EngineLoad`): how many requests, and from how many different
problems at once, which is what shows that different users' searches share the engines'
batches. Each call is also credited to the request it was made for (`SearchProgress`,
what streaming progress events report). The request is found through a context variable:
the service sets it in the task that runs a request's search, and asyncio copies it into
every task the search starts, so no search code has to pass it along.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from ttsearch.core.backend import Policy, RevisionPolicy, Sample, SampleRequest, StepScores, Verifier

__all__ = ["EngineLoad", "MeteredPolicy", "MeteredVerifier", "SearchProgress", "credit_to"]


@dataclass(slots=True)
class SearchProgress:
    """What one request's search has done so far."""

    policy_requests: int = 0  # policy calls finished (one per expansion)
    samples: int = 0  # sequences sampled
    generated_tokens: int = 0
    solutions: int = 0  # samples that ended a solution (the model's end of turn)
    prm_requests: int = 0  # verifier calls finished
    scored_steps: int = 0
    prm_tokens: int = 0  # PRM input tokens of those calls
    prm_cached_tokens: int = 0  # of those, read from the PRM's prefix cache (or its score memo)
    started: float = field(default_factory=time.monotonic)  # the request's arrival
    admitted: float | None = None  # when it got a search slot (None: still queued)
    version: int = 0  # bumped on every change: a stream sends an event only when it moved

    def sampled(self, samples: Sequence[Sample]) -> None:
        self.policy_requests += 1
        self.samples += len(samples)
        self.generated_tokens += sum(len(sample.token_ids) for sample in samples)
        self.solutions += sum(sample.finish == "eos" for sample in samples)
        self.version += 1

    def scored(self, scores: StepScores) -> None:
        self.prm_requests += 1
        self.scored_steps += len(scores.scores)
        self.prm_tokens += scores.prompt_tokens
        self.prm_cached_tokens += scores.cached_tokens
        self.version += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "queued": self.admitted is None,
            "elapsed": round(time.monotonic() - self.started, 3),
            "policy_requests": self.policy_requests,
            "samples": self.samples,
            "generated_tokens": self.generated_tokens,
            "solutions": self.solutions,
            "prm_requests": self.prm_requests,
            "scored_steps": self.scored_steps,
            "prm_tokens": self.prm_tokens,
        }


_CURRENT: ContextVar[SearchProgress | None] = ContextVar("ttsearch_serve_progress", default=None)


def credit_to(progress: SearchProgress) -> None:
    """Credit the engine calls of this task, and of the tasks it starts from now on, to `progress`."""
    _CURRENT.set(progress)


class EngineLoad:
    """Calls in flight on one engine, and the distinct requests (problems) they come from."""

    def __init__(self) -> None:
        self.requests = 0
        self.peak_requests = 0
        self._by_problem: Counter[int] = Counter()  # id(SearchProgress) -> calls in flight
        self.peak_problems = 0  # most problems with a call in flight at the same moment

    @property
    def problems(self) -> int:
        return len(self._by_problem)

    @contextlib.contextmanager
    def track(self, progress: SearchProgress | None) -> Iterator[None]:
        self.requests += 1
        self.peak_requests = max(self.peak_requests, self.requests)
        key = None if progress is None else id(progress)  # None: a call made outside any request
        if key is not None:
            self._by_problem[key] += 1
            self.peak_problems = max(self.peak_problems, len(self._by_problem))
        try:
            yield
        finally:
            self.requests -= 1
            if key is not None:
                self._by_problem[key] -= 1
                if not self._by_problem[key]:
                    del self._by_problem[key]


class MeteredPolicy:
    """A `Policy` that counts its calls on `load` and credits them to the calling request."""

    def __init__(self, inner: Policy, load: EngineLoad) -> None:
        self.inner = inner
        self.load = load

    @property
    def max_model_len(self) -> int:
        return self.inner.max_model_len

    def encode_problem(self, problem: str) -> list[int]:
        return self.inner.encode_problem(problem)

    def encode_revision(self, problem: str, attempts: Sequence[str]) -> list[int]:
        if not isinstance(self.inner, RevisionPolicy):
            raise TypeError(f"the policy ({type(self.inner).__name__}) cannot render revision prompts")
        return self.inner.encode_revision(problem, attempts)

    async def sample(self, request: SampleRequest) -> list[Sample]:
        progress = _CURRENT.get()
        with self.load.track(progress):
            samples = await self.inner.sample(request)
        if progress is not None:
            progress.sampled(samples)
        return samples

    async def close(self) -> None:
        await self.inner.close()


class MeteredVerifier:
    """A `Verifier` that counts its calls on `load` and credits them to the calling request."""

    def __init__(self, inner: Verifier, load: EngineLoad) -> None:
        self.inner = inner
        self.load = load

    async def score(self, question: str, steps: Sequence[str], *, first: int = 0) -> StepScores:
        progress = _CURRENT.get()
        with self.load.track(progress):
            scores = await self.inner.score(question, steps, first=first)
        if progress is not None:
            progress.scored(scores)
        return scores

    async def close(self) -> None:
        await self.inner.close()
