"""`start_together`: engines started side by side are closed whenever the caller does not
get them (a failed sibling, a cancelled caller), so no engine outlives its owner."""

from __future__ import annotations

import asyncio
import threading

import pytest

from ttsearch.backends.startup import start_together


class FakeEngine:
    def __init__(self, name: str, *, fail_close: bool = False) -> None:
        self.name = name
        self.closed = False
        self._fail_close = fail_close

    async def close(self) -> None:
        self.closed = True
        if self._fail_close:
            raise RuntimeError(f"{self.name} would not shut down")


async def test_engines_start_side_by_side_and_are_returned_in_order() -> None:
    first, second = FakeEngine("policy"), FakeEngine("prm")
    assert await start_together(lambda: first, lambda: second) == [first, second]
    assert not first.closed and not second.closed


async def test_a_failed_start_closes_the_engines_that_started() -> None:
    started = FakeEngine("policy")

    def fail() -> FakeEngine:
        raise RuntimeError("PRM did not start")

    with pytest.raises(RuntimeError, match="PRM did not start"):
        await start_together(lambda: started, fail)
    assert started.closed


async def test_a_start_finishing_after_the_caller_was_cancelled_is_closed() -> None:
    # A thread cannot be stopped: an engine still starting when the caller is cancelled
    # comes up later, and must then be closed rather than left running with no owner.
    fast, slow = FakeEngine("policy"), FakeEngine("prm")
    slow_is_starting, finish_slow = threading.Event(), threading.Event()

    def start_slow() -> FakeEngine:
        slow_is_starting.set()
        finish_slow.wait(10)
        return slow

    caller = asyncio.create_task(start_together(lambda: fast, start_slow))
    assert await asyncio.to_thread(slow_is_starting.wait, 10)
    await asyncio.sleep(0.05)  # the fast one is up by now
    caller.cancel()
    await asyncio.sleep(0.05)
    finish_slow.set()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert fast.closed and slow.closed


async def test_one_engine_failing_to_close_does_not_keep_the_others_open() -> None:
    stubborn, other = FakeEngine("policy", fail_close=True), FakeEngine("prm")

    def fail() -> FakeEngine:
        raise ValueError("verifier did not start")

    with pytest.raises(ValueError, match="verifier did not start") as raised:
        await start_together(lambda: stubborn, lambda: other, fail)
    assert stubborn.closed and other.closed
    assert any("policy would not shut down" in note for note in raised.value.__notes__)
