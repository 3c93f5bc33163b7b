"""What bounds the work in flight, and what each problem has cost.

`RequestGate` caps concurrent backend calls (policy and verifier separately) so that
500 problems x N=256 keep memory flat while the engines still see large batches;
`Usage` counts tokens and calls per problem. The problem-level bound (how many problems
search at once) lives in `Searcher.solve_all`.
"""

from __future__ import annotations

import asyncio
import heapq
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass


@dataclass(slots=True)
class Usage:
    """Compute spent on one problem (or, summed, on a run)."""

    policy_calls: int = 0  # requests sent to the policy (one per expansion / rollout step)
    policy_samples: int = 0  # sequences sampled (n per request; 1 for a greedy request)
    rollout_samples: int = 0  # of those, greedy lookahead rollout steps
    prompt_tokens: int = 0  # prompt tokens of policy requests (mostly prefix-cache hits)
    generated_tokens: int = 0  # tokens sampled by the policy, rollouts included
    verifier_calls: int = 0  # score() calls (one per scored child / rollout)
    verifier_tokens: int = 0  # PRM input tokens sent (prefix-cache hits included)
    verifier_cached_tokens: int = 0  # of those, read from the PRM's prefix cache
    verifier_computed_tokens: int = 0  # verifier_tokens - verifier_cached_tokens: what the PRM computed
    verifier_requests: int = 0  # engine requests the verifier sent (0 where a backend does not say)
    seconds: float = 0.0  # wall time of the search

    def add(self, other: Usage) -> None:
        for name in self.__slots__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


class _PrioritySemaphore:
    """A semaphore whose waiters are served lowest `priority` first (FIFO among equals)."""

    def __init__(self, value: int) -> None:
        self._free = value
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = 0

    async def acquire(self, priority: int) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._order += 1
        heapq.heappush(self._waiters, (priority, self._order, future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # handed a slot just as we were cancelled: pass it on
            raise

    def release(self) -> None:
        while self._waiters:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)
                return
        self._free += 1


class RequestGate:
    """Caps concurrent policy and verifier requests (one gate shared by all problems).

    When a cap is reached, the request of the problem admitted first goes first
    (`priority` = admission order): problems nearly done finish before new ones take
    the engines' batch slots and KV cache."""

    def __init__(self, max_policy_requests: int, max_verifier_requests: int) -> None:
        if max_policy_requests < 1 or max_verifier_requests < 1:
            raise ValueError(
                f"request limits must be >= 1, got policy={max_policy_requests}, verifier={max_verifier_requests}"
            )
        self._policy = _PrioritySemaphore(max_policy_requests)
        self._verifier = _PrioritySemaphore(max_verifier_requests)

    @asynccontextmanager
    async def policy(self, priority: int = 0) -> AsyncIterator[None]:
        await self._policy.acquire(priority)
        try:
            yield
        finally:
            self._policy.release()

    @asynccontextmanager
    async def verifier(self, priority: int = 0) -> AsyncIterator[None]:
        await self._verifier.acquire(priority)
        try:
            yield
        finally:
            self._verifier.release()


def request_seed(base_seed: int | None, *parts: object) -> int | None:
    """A reproducible per-request seed from the run seed and the request's place in the tree.

    Derived from the tree position rather than a counter so that the same search asks for
    the same samples whatever order concurrent requests happen to complete in.
    """
    if base_seed is None:
        return None
    key = "/".join(map(str, (base_seed, *parts))).encode()
    return zlib.crc32(key) & 0x7FFFFFFF
