"""Several servers for one role (the policy, or the PRM), with problem affinity.

A problem sticks to one server (its prefix cache lives there): the first request of a
new key (a problem) goes to the least-loaded server that is up (fewest requests in
flight, then fewest problems), and later requests of that key follow it
(`ttsearch.backends.affinity.StickyLeastLoaded`, bounded to the most recent problems).

Whose fault a failure is decides what happens (`ReplicaPool.post`):

- An HTTP 4xx answer is the request's fault: `ServerRequestError` with the server's
  message; the server stays up and the request is not sent elsewhere.
- No answer (connection lost, timeout, 5xx after the retries, `ReplicaUnavailable`) asks
  the server's health (GET /health, one check shared by every request that failed there
  meanwhile). A server whose health check passes is fine, so the request itself is at
  fault: `RequestFailedError` for that request alone, the server stays up and no other
  server is tried (one bad or oversized request used to take every server down in
  turn). A server whose health check fails too is marked down: the request that found it
  down, and every other request in flight there, is sent again to another server, and
  their problems move with them (finished work is never redone).
- A down server is re-checked in the background, after `HttpOptions.recheck_backoff`
  seconds, doubling up to `recheck_max`; when its health check passes it is back in the
  pool (new problems can go to it; problems that moved stay where they are).

When every server is down, `AllReplicasDownError` names each one and why.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import httpx

from ttsearch.backends.affinity import DEFAULT_MAX_PROBLEMS, StickyLeastLoaded
from ttsearch.backends.http.client import (
    HttpOptions,
    ReplicaUnavailable,
    RequestFailedError,
    check_health,
    get_json,
    make_client,
    post_json,
    served_block_size,
)
from ttsearch.errors import BackendError

__all__ = ["AllReplicasDownError", "Replica", "ReplicaPool"]

logger = logging.getLogger(__name__)


class AllReplicasDownError(BackendError):
    """Every server of a role is down."""


@dataclass(eq=False)
class Replica:
    """One server and what the pool knows about it."""

    url: str
    client: httpx.AsyncClient = field(repr=False)
    router: StickyLeastLoaded = field(repr=False)
    index: int  # its place in the pool (and in the router)
    down: str | None = None  # why it was marked down (None: up)
    # The health check in progress (shared by the requests that failed meanwhile), and the
    # background re-checks of a down server.
    health_check: asyncio.Task[str | None] | None = field(default=None, repr=False)
    recovery: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet answered."""
        return self.router.in_flight[self.index]

    @property
    def problems(self) -> int:
        """Keys (problems) assigned to it."""
        return self.router.problems[self.index]


class ReplicaPool:
    """The servers of one role. `role` names them in messages ("policy", "PRM")."""

    def __init__(
        self,
        role: str,
        urls: Sequence[str],
        options: HttpOptions | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        max_problems: int = DEFAULT_MAX_PROBLEMS,
    ) -> None:
        """`urls`: each server's base URL (e.g. "http://10.0.0.7:8000"; the "/v1" paths are
        added). `transport`: a test double for every client (e.g. `httpx.MockTransport`).
        `max_problems`: how many problems' affinity is kept (the most recently used)."""
        if isinstance(urls, str):
            urls = [urls]
        if not urls:
            raise ValueError(f"no {role} server URLs given")
        cleaned = [_clean_url(u, role) for u in urls]
        if len(set(cleaned)) != len(cleaned):
            raise ValueError(f"{role} server URLs repeat: {cleaned}")
        self.role = role
        self.options = options or HttpOptions()
        self._router = StickyLeastLoaded(len(cleaned), max_problems=max_problems)
        self._replicas = [
            Replica(u, make_client(u, self.options, transport), self._router, i) for i, u in enumerate(cleaned)
        ]

    @property
    def replicas(self) -> tuple[Replica, ...]:
        return tuple(self._replicas)

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(r.url for r in self._replicas)

    def replica_of(self, key: Hashable) -> Replica | None:
        """The server `key`'s requests go to (None: none yet, or forgotten)."""
        home = self._router.home_of(key)
        return None if home is None else self._replicas[home]

    async def post(self, key: Hashable | None, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST `payload` to `path` on `key`'s server (None: no affinity, the least-loaded
        server), moving `key` to another server each time its server turns out to be down.
        Raises `RequestFailedError` when the request fails on a healthy server (a
        `ServerRequestError` for a 4xx), `AllReplicasDownError` when no server is left,
        and `post_json`'s other errors as they are."""
        while True:
            replica = self._pick(key)
            with self._router.counted(replica.index):
                try:
                    return await post_json(
                        replica.client, path, payload, self.options, give_up=partial(_is_down, replica)
                    )
                except ReplicaUnavailable as e:
                    failure = e
            await self._blame(replica, f"POST {path}", failure)

    async def _blame(self, replica: Replica, what: str, failure: ReplicaUnavailable) -> None:
        """After `what` got no answer from `replica`: mark the server down if its health
        check fails too (the caller then tries another), else raise `RequestFailedError`."""
        if replica.down is not None:
            return  # another request found it down meanwhile
        unhealthy = await self._check(replica)
        if unhealthy is None:
            raise RequestFailedError(
                f"{self.role} request {what} failed on {replica.url}, which is healthy (GET /health answers), "
                f"so the request itself is at fault; the server stays in use: {failure}"
            ) from failure
        self.mark_down(replica, f"{failure}; {unhealthy}")

    async def _check(self, replica: Replica) -> str | None:
        """`check_health` of `replica`, one at a time: requests that fail while a check is
        in progress wait for its answer instead of sending their own."""
        if replica.health_check is None or replica.health_check.done():
            replica.health_check = asyncio.ensure_future(check_health(replica.client, self.options))
        # shield: a cancelled request must not cancel the check the others wait for
        return await asyncio.shield(replica.health_check)

    def mark_down(self, replica: Replica, reason: str) -> None:
        """Take `replica` out of the pool for `reason`, and start re-checking its health
        in the background (call from the event loop)."""
        if replica.down is None:
            replica.down = reason
            up = sum(r.down is None for r in self._replicas)
            logger.warning(
                "%s server %s is down (%s); %d of %d left", self.role, replica.url, reason, up, len(self._replicas)
            )
            replica.recovery = asyncio.get_running_loop().create_task(self._recover(replica))

    async def _recover(self, replica: Replica) -> None:
        """Re-check a down server's health, backing off, until it passes: then it is up."""
        delay = self.options.recheck_backoff
        while True:
            await asyncio.sleep(delay)
            unhealthy = await self._check(replica)
            if unhealthy is None:
                replica.down = None
                logger.warning("%s server %s is healthy again and back in use", self.role, replica.url)
                return
            delay = min(2 * delay, self.options.recheck_max)

    def _pick(self, key: Hashable | None) -> Replica:
        index = self._router.pick(key, usable=lambda i: self._replicas[i].down is None)
        if index is None:
            reasons = "; ".join(f"{r.url} ({r.down})" for r in self._replicas)
            raise AllReplicasDownError(f"all {len(self._replicas)} {self.role} servers are down: {reasons}")
        return self._replicas[index]

    async def get_each(self, path: str) -> list[dict[str, Any] | BackendError]:
        """GET `path` from every server that is up, side by side: each answer, or its error
        (in `replicas` order; a down server's entry is its error)."""

        async def one(replica: Replica) -> dict[str, Any] | BackendError:
            if replica.down is not None:
                return ReplicaUnavailable(replica.down)
            try:
                return await get_json(replica.client, path, self.options)
            except BackendError as e:
                return e

        return list(await asyncio.gather(*(one(r) for r in self._replicas)))

    async def block_sizes(self) -> list[int | None]:
        """Each server's KV-cache block size as its /metrics says (None where it does not)."""
        return list(await asyncio.gather(*(served_block_size(r.client, self.options) for r in self._replicas)))

    async def close(self) -> None:
        """Stop the health checks and close the connections (the servers keep running)."""
        tasks = [t for r in self._replicas for t in (r.recovery, r.health_check) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(r.client.aclose() for r in self._replicas))


def _is_down(replica: Replica) -> bool:
    return replica.down is not None


def _clean_url(url: str, role: str) -> str:
    url = url.strip().rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")]  # users often copy the OpenAI base URL
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{role} server URL {url!r} must start with http:// or https://")
    return url
