"""Backpressure: at most `max_running` searches at once, at most `max_waiting` queued behind them.

A request first takes a place (`Admission.reserve`, synchronous, so a full queue is a 429
before a streamed response has started), then waits for a search slot
(`Reservation.running()`), in arrival order. A reservation that is given up (its client
left while queued) frees its place at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from ttsearch.serve.errors import Overloaded

__all__ = ["Admission", "Reservation"]


class Admission:
    """Counts running and waiting requests; refuses one past both bounds."""

    def __init__(self, *, max_running: int, max_waiting: int, retry_after: Callable[[], int]) -> None:
        if max_running < 1:
            raise ValueError(f"max_running must be >= 1, got {max_running}")
        if max_waiting < 0:
            raise ValueError(f"max_waiting must be >= 0, got {max_waiting}")
        self.max_running = max_running
        self.max_waiting = max_waiting
        self._retry_after = retry_after  # seconds a refused client should wait (an estimate)
        self._slots = asyncio.Semaphore(max_running)
        self.running = 0
        self.waiting = 0  # reserved, not running yet (the queue)

    def reserve(self) -> Reservation:
        """A place in the queue, or `Overloaded` (429) when the queue is full."""
        if self.running + self.waiting >= self.max_running + self.max_waiting:
            raise Overloaded(
                f"the server is at capacity ({self.running} searches running, {self.waiting} queued, "
                f"queue limit {self.max_waiting}); retry later",
                retry_after=self._retry_after(),
            )
        self.waiting += 1
        return Reservation(self)


class Reservation:
    """One request's place: queued until `running()` gets a slot; `release()` if never run."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self._queued = True

    def release(self) -> None:
        """Give the queue place back (idempotent; a no-op once running)."""
        if self._queued:
            self._queued = False
            self._admission.waiting -= 1

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Wait for a search slot (in arrival order), hold it for the block."""
        if not self._queued:
            raise RuntimeError("this reservation was already used or released")
        admission = self._admission
        try:
            await admission._slots.acquire()
        finally:
            self.release()  # queued no more: running, or given up while waiting
        admission.running += 1
        try:
            yield
        finally:
            admission.running -= 1
            admission._slots.release()
