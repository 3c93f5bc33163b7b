"""Several servers for one role (the policy, or the PRM), with problem affinity.

A problem sticks to one server (its prefix cache lives there): the first request of a
new key (a problem) goes to the least-loaded server that is up (fewest requests in
flight, then fewest problems), and later requests of that key follow it
(`ttsearch.backends.affinity.StickyLeastLoaded`, bounded to the most recent problems). A server that
does not answer (`ReplicaUnavailable`: connection lost, timeout, 5xx after retries) is
marked down for the rest of the pool's life; the request that found it down, and every
other request in flight there, is sent again to another server, and its problems move
with them (work already finished is never redone: only the failed request is resent).
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
from ttsearch.backends.http.client import HttpOptions, ReplicaUnavailable, get_json, make_client, post_json
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
        """POST `payload` to `path` on `key`'s server, moving `key` to another server each
        time its server turns out to be down (None: no affinity, the least-loaded server). Raises `AllReplicasDownError` when none is
        left, and `post_json`'s other errors as they are."""
        while True:
            replica = self._pick(key)
            with self._router.counted(replica.index):
                try:
                    return await post_json(
                        replica.client, path, payload, self.options, give_up=partial(_is_down, replica)
                    )
                except ReplicaUnavailable as e:
                    self.mark_down(replica, str(e))

    def mark_down(self, replica: Replica, reason: str) -> None:
        if replica.down is None:
            replica.down = reason
            up = sum(r.down is None for r in self._replicas)
            logger.warning(
                "%s server %s is down (%s); %d of %d left", self.role, replica.url, reason, up, len(self._replicas)
            )

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

    async def close(self) -> None:
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
