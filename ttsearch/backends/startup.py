"""Start several engines side by side without leaking the ones that did start."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any


async def start_together(*factories: Callable[[], Any]) -> list[Any]:
    """Run blocking engine constructors in threads, concurrently (vLLM start-up is slow).

    If any fails, the backends that did start are closed and the first error is raised,
    so a failed start never leaves an engine holding memory.
    """
    results = await asyncio.gather(*(asyncio.to_thread(f) for f in factories), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        for backend in results:
            if not isinstance(backend, BaseException):
                await backend.close()
        raise errors[0]
    return list(results)


async def open_backends(
    *,
    connect_policy: Callable[[], Awaitable[Any]] | None = None,
    start_policy: Callable[[], Any] | None = None,
    connect_verifier: Callable[[], Awaitable[Any]] | None = None,
    start_verifier: Callable[[], Any] | None = None,
) -> tuple[Any, Any]:
    """The policy and the verifier (None when neither way is given), each either connected
    (`connect_*`: a coroutine function, e.g. vLLM servers) or started in-process
    (`start_*`: a blocking constructor; the in-process ones start side by side). Connect
    wins where both are given. Whatever opened is closed if anything fails."""
    if connect_policy is None and start_policy is None:
        raise ValueError("open_backends needs a way to open the policy")
    connected: list[Any] = []
    try:
        policy = await connect_policy() if connect_policy is not None else None
        if policy is not None:
            connected.append(policy)
        verifier = await connect_verifier() if connect_verifier is not None else None
        if verifier is not None:
            connected.append(verifier)
        factories = [f for f, opened in ((start_policy, policy), (start_verifier, verifier)) if f and opened is None]
        started = iter(await start_together(*factories))
        if policy is None:
            policy = next(started)
        if verifier is None and start_verifier is not None:
            verifier = next(started)
        return policy, verifier
    except BaseException:
        for backend in connected:
            await backend.close()
        raise
