"""The policy engine's decode limit: a search's policy requests replayed with nothing between them.

`RecordingPolicy` wraps a `Policy` and keeps every request a search completed
(`SampleRequest`: prompt token ids, n, temperature, top_p, max_tokens, stop, seed) in the
order the search sent them. `replay()` then sends exactly those requests to the same
policy at once (at most `max_in_flight` open, the cap the search's request gate had),
with no PRM and no request waiting for another, and times them. The search's wall time
over that time is how far the search is from what its own policy work costs on this
engine; `benchmarks/throughput.py` prints it per method (issue 18's target: <= 1.2x).

`PreemptionCounter` counts the requests a vLLM engine preempted (its KV cache was full, so
it dropped their cache and recomputes it later), for engines started with stats on.

`PrefillCounter` wraps the vLLM engine under a `VLLMPolicy` and sums, per request, the
prompt tokens and the ones vLLM reports as prefix-cache hits, so the prefill work of the
search and of its replay can be compared. What the limit does and does not include is in
`benchmarks/throughput.py`'s docstring.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ttsearch.core.backend import Policy, Sample, SampleRequest

__all__ = ["PreemptionCounter", "PrefillCounter", "RecordingPolicy", "Replay", "count_prefill", "replay"]


class RecordingPolicy:
    """A `Policy` that forwards every call to `policy` and records each request that
    returned samples (`requests`, in the order they were sent; `tokens`, the tokens each
    returned). Requests that raised or were cancelled are counted in `failed`, not kept:
    the replay repeats the work the search got back."""

    def __init__(self, policy: Policy) -> None:
        self._policy = policy
        self._sent = 0
        self._done: list[tuple[int, SampleRequest, int]] = []  # (send order, request, tokens)
        self.failed = 0

    def __getattr__(self, name: str) -> Any:  # engine, tokenizer, kv_cache_tokens, ...
        return getattr(self._policy, name)

    @property
    def max_model_len(self) -> int:
        return self._policy.max_model_len

    @property
    def kv_cache_tokens(self) -> int | None:
        # Spelled out (not left to __getattr__): `KVCacheSized` checks may look it up statically.
        return getattr(self._policy, "kv_cache_tokens", None)

    def encode_problem(self, problem: str) -> list[int]:
        return self._policy.encode_problem(problem)

    async def sample(self, request: SampleRequest) -> list[Sample]:
        order = self._sent
        self._sent += 1
        try:
            samples = await self._policy.sample(request)
        except BaseException:
            self.failed += 1
            raise
        self._done.append((order, request, sum(len(s.token_ids) for s in samples)))
        return samples

    async def close(self) -> None:
        await self._policy.close()

    @property
    def requests(self) -> list[SampleRequest]:
        """The completed requests, in the order they were sent."""
        return [request for _, request, _ in sorted(self._done, key=lambda d: d[0])]

    @property
    def generated_tokens(self) -> int:
        return sum(tokens for _, _, tokens in self._done)


@dataclass(slots=True)
class Replay:
    """What one replay did."""

    seconds: float
    requests: int
    sequences: int  # sum of n
    prompt_tokens: int  # sum of prompt lengths (sent; prefix-cache hits included)
    generated_tokens: int  # tokens the samples hold (a greedy request's copies counted n times, as Usage does)
    max_in_flight: int


async def replay(
    policy: Policy,
    requests: Sequence[SampleRequest],
    *,
    max_in_flight: int,
    on_done: Callable[[int], None] | None = None,
) -> Replay:
    """Send `requests` to `policy` all at once, at most `max_in_flight` open (the rest
    wait in order), and time them from the first send to the last sample. `on_done(k)`
    is told how many have finished. Raises what a request raises (the others are
    cancelled)."""
    if max_in_flight < 1:
        raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
    gate = asyncio.Semaphore(max_in_flight)
    done = 0
    tokens = 0

    async def one(request: SampleRequest) -> None:
        nonlocal done, tokens
        async with gate:
            samples = await policy.sample(request)
        tokens += sum(len(s.token_ids) for s in samples)
        done += 1
        if on_done is not None:
            on_done(done)

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:  # tasks start, and take the gate, in order
        for request in requests:
            group.create_task(one(request))
    return Replay(
        seconds=time.perf_counter() - started,
        requests=len(requests),
        sequences=sum(r.n for r in requests),
        prompt_tokens=sum(len(r.prompt_token_ids) for r in requests),
        generated_tokens=tokens,
        max_in_flight=max_in_flight,
    )


@dataclass(slots=True)
class _Counts:
    requests: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0


class PrefillCounter:
    """A vLLM `AsyncLLM` that counts, per finished `generate` request, its prompt tokens
    and the prefix-cache hits vLLM reports (`RequestOutput.num_cached_tokens`; for a
    request with n > 1, vLLM reports it for one of its n sequences). Everything else is
    the engine's."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.counts = _Counts()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    async def generate(self, *args: Any, **kwargs: Any) -> AsyncGenerator[Any, None]:
        final = None
        async with contextlib.aclosing(self.engine.generate(*args, **kwargs)) as outputs:
            async for output in outputs:
                final = output
                yield output
        if final is not None and getattr(final, "finished", False):
            self.counts.requests += 1
            self.counts.prompt_tokens += len(final.prompt_token_ids or ())
            self.counts.cached_tokens += final.num_cached_tokens or 0

    def snapshot(self) -> tuple[int, int, int]:
        return self.counts.requests, self.counts.prompt_tokens, self.counts.cached_tokens

    def since(self, snapshot: tuple[int, int, int]) -> dict[str, int]:
        """Requests, prompt tokens, cached and computed prompt tokens since `snapshot`."""
        requests, prompt, cached = (now - then for now, then in zip(self.snapshot(), snapshot, strict=True))
        return {
            "requests": requests,
            "prompt_tokens": prompt,
            "prompt_cached_tokens": cached,
            "prompt_computed_tokens": prompt - cached,
        }


@contextlib.contextmanager
def count_prefill(policy: Any) -> Any:
    """Put a `PrefillCounter` between a `VLLMPolicy` and its engine for the block (yields it;
    None, and nothing changed, for a policy without one). It sets the policy's private
    `_engine` (ttsearch has no public hook for the prefix-cache hits of policy requests)
    and restores it on the way out, before the policy is closed."""
    engine = getattr(policy, "_engine", None)
    if engine is None or not hasattr(engine, "generate"):
        yield None
        return
    counter = PrefillCounter(engine)
    policy._engine = counter
    try:
        yield counter
    finally:
        policy._engine = engine


class PreemptionCounter:
    """Counts the sequences a vLLM `AsyncLLM` preempts, from the per-iteration stats vLLM
    hands its stat loggers (`IterationStats.num_preempted_reqs`; a request with n > 1 runs
    as n sequences, each counted). vLLM computes those stats only for an engine started
    with `disable_log_stats=False`; `attach` returns None for one without."""

    def __init__(self) -> None:
        self.preemptions = 0

    @classmethod
    def attach(cls, engine: Any) -> PreemptionCounter | None:
        """A counter fed by `engine`'s stat-logger manager from now on (vLLM has no public
        hook for a logger added after start-up, so it joins the manager's list)."""
        manager = getattr(engine, "logger_manager", None)
        if manager is None:
            return None
        counter = cls()
        manager.stat_loggers.append(counter)
        return counter

    # The calls vLLM's StatLoggerManager makes on each of its loggers.
    def record(
        self, scheduler_stats: Any, iteration_stats: Any, mm_cache_stats: Any = None, engine_idx: int = 0
    ) -> None:
        if iteration_stats is not None:
            self.preemptions += iteration_stats.num_preempted_reqs

    def log(self) -> None:
        pass

    def log_engine_initialized(self) -> None:
        pass

    def record_sleep_state(self, sleep: int = 0, level: int = 0) -> None:
        pass

    def record_admission_rejection(self, reason: str) -> None:
        pass
