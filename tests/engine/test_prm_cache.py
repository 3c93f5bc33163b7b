"""`PrefixGate` (request ordering for the prefix cache) and `ScoreMemo`, without vLLM."""

from __future__ import annotations

import asyncio

import pytest

from ttsearch.backends.prm_cache import PrefixGate, ScoreMemo, prefix_digests


def test_prefix_digests_depend_on_the_prefix_only():
    a = list(range(40))
    b = a[:20] + [99] * 20
    da, db = prefix_digests(a, [10, 20, 30]), prefix_digests(b, [10, 20, 30])
    assert da[:2] == db[:2] and da[2] != db[2]
    assert prefix_digests(a, [30]) == [da[2]]  # one pass or several: the same keys
    with pytest.raises(ValueError):
        prefix_digests(a, [20, 10])


def test_memo_returns_what_was_recorded_for_the_same_prefix():
    memo = ScoreMemo(capacity=8)
    ids = [5, 6, 7, 8, 9]
    memo.record(ids, {1: 0.25, 3: 0.75})
    assert memo.lookup(ids, [1, 3]) == [0.25, 0.75]
    assert memo.lookup([5, 6, 0, 0, 0], [1, 3]) == [0.25, None]  # same tokens up to 1 only
    assert memo.lookup(ids, [2]) == [None]


def test_memo_is_bounded():
    memo = ScoreMemo(capacity=3)
    for k in range(10):
        memo.record([k, k], {1: float(k)})
    assert len(memo) == 3
    assert memo.lookup([9, 9], [1]) == [9.0] and memo.lookup([0, 0], [1]) == [None]


def test_block_keys_count_full_blocks_before_the_last_token():
    gate = PrefixGate(4)
    assert len(gate.block_keys(list(range(8)))) == 1  # vLLM computes the last token: 7 // 4
    assert len(gate.block_keys(list(range(9)))) == 2
    assert gate.block_keys(list(range(3))) == []


async def _timeline(gate: PrefixGate, prompts: dict[str, list[int]], hold_s: float = 0.05) -> list[str]:
    events: list[str] = []

    async def one(name: str, ids: list[int]) -> None:
        async with gate.hold(ids):
            events.append(f"start {name}")
            await asyncio.sleep(hold_s)
            events.append(f"end {name}")

    await asyncio.gather(*(one(name, ids) for name, ids in prompts.items()))
    return events


async def test_requests_sharing_a_block_wait_for_the_first():
    gate = PrefixGate(4)
    question = [1, 2, 3, 4, 5, 6, 7, 8]
    events = await _timeline(gate, {"a": question + [10, 11], "b": question + [20, 21], "c": question + [30]})
    assert events[:2] == ["start a", "end a"]  # b and c start only once a has computed the blocks
    assert sorted(events[2:4]) == ["start b", "start c"]  # then the siblings run together
    assert gate.waits == 2


async def test_disjoint_requests_do_not_wait():
    gate = PrefixGate(4)
    events = await _timeline(gate, {"a": [1, 2, 3, 4, 5, 6], "b": [9, 9, 9, 9, 9, 9]})
    assert events[:2] == ["start a", "start b"] and gate.waits == 0


async def test_identical_prompts_wait_even_without_a_full_block():
    gate = PrefixGate(32)
    events = await _timeline(gate, {"a": [1, 2, 3], "b": [1, 2, 3]})
    assert events == ["start a", "end a", "start b", "end b"]


async def test_blocks_computed_before_are_not_waited_on_again():
    gate = PrefixGate(4)
    question = [1, 2, 3, 4, 5, 6, 7, 8]
    async with gate.hold(question + [0]):
        pass
    events = await _timeline(gate, {"a": question + [10, 11], "b": question + [20, 21]})
    assert events[:2] == ["start a", "start b"] and gate.waits == 0


async def test_a_failed_request_leaves_its_blocks_uncomputed():
    gate = PrefixGate(4)
    question = [1, 2, 3, 4, 5, 6, 7, 8]
    with pytest.raises(RuntimeError):
        async with gate.hold(question + [0]):
            raise RuntimeError("engine died")
    events = await _timeline(gate, {"a": question + [10], "b": question + [20]})
    assert events[:2] == ["start a", "end a"]  # the blocks are computed again, by a first
