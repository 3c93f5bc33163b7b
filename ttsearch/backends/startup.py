"""Start several engines side by side without leaking the ones that did start."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any


async def start_together(*factories: Callable[[], Any]) -> list[Any]:
    """Run blocking engine constructors in threads, concurrently (vLLM start-up is slow).

    If any fails, the backends that did start are closed and the first error is raised,
    so a failed start never leaves an engine holding memory. If the caller is cancelled,
    the cancellation waits for the start-ups still running (a thread cannot be stopped)
    and closes every engine they bring up before it propagates: none is left without an
    owner.
    """
    starts = [asyncio.ensure_future(asyncio.to_thread(factory)) for factory in factories]
    try:
        await asyncio.wait(starts)  # never cancels the starts: their engines must be reached
    except BaseException as cancelled:
        await _close_once_started(starts, cancelled)
        raise
    errors = [error for start in starts if (error := start.exception()) is not None]
    if errors:
        await _close_started(starts, errors[0])
        raise errors[0]
    return [start.result() for start in starts]


async def _close_once_started(starts: Sequence[asyncio.Future[Any]], cancelled: BaseException) -> None:
    """Wait for every start-up to end (through further cancellations: each leaves an engine
    behind otherwise), then close the engines that came up."""
    pending = {start for start in starts if not start.done()}
    while pending:
        try:
            _, pending = await asyncio.wait(pending)
        except asyncio.CancelledError:
            continue
    await _close_started(starts, cancelled)


async def _close_started(starts: Sequence[asyncio.Future[Any]], error: BaseException) -> None:
    """Close the backend of every start-up that succeeded, each even if another's close
    fails; such failures are added to `error` as notes (it is what the caller sees)."""
    for start in starts:
        if start.cancelled() or start.exception() is not None:
            continue
        backend = start.result()
        try:
            await backend.close()
        except Exception as close_error:
            error.add_note(f"closing {type(backend).__name__} after a failed start-up also failed: {close_error!r}")


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
