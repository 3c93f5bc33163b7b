"""What keeps PRM scoring incremental: request ordering for vLLM's prefix cache, and a memo.

vLLM caches the KV of *full* blocks (`block_size` tokens) once a request has computed
them, and a request reads the longest cached run of full blocks of its prompt. Two
requests that share a prefix but run at the same time both compute it: the cache only
helps a request sent after the one that computed the prefix. `PrefixGate` orders the
requests of one verifier so that it does: before a request is sent, it waits for any
request still computing a block of its prompt (identified by a chained hash of the
block's tokens and all before it), and registers the blocks it will compute itself. The
16 first steps of one problem therefore compute the question once (the first request),
and the other 15 wait for it, then hit the cache. A request never waits once it is
registered, so there are no cycles.

`ScoreMemo` remembers the score read at each anchor position, keyed by a hash of the
tokens up to it. A causal PRM's output at position p depends only on tokens <= p, so a
score seen once is the score of every input with that prefix; the pooling scorer reads
scores it needs at positions inside a prefix-cache hit (no rows come back for cached
tokens) from here, and an input whose scores are all known is not sent at all.

Both are pure Python (no vLLM); keys are 16-byte BLAKE2b digests.
"""

from __future__ import annotations

import asyncio
import hashlib
from array import array
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

__all__ = ["PrefixGate", "ScoreMemo", "prefix_digests"]


def prefix_digests(token_ids: Sequence[int], ends: Sequence[int]) -> list[bytes]:
    """Digest of `token_ids[:e]` for each `e` in `ends` (ascending), in one pass."""
    data = array("q", token_ids).tobytes()
    width = array("q").itemsize
    hasher = hashlib.blake2b(digest_size=16)
    out: list[bytes] = []
    done = 0
    for end in ends:
        if end < done:
            raise ValueError("ends must be ascending")
        hasher.update(data[done * width : end * width])
        done = end
        out.append(hasher.copy().digest())
    return out


class _Lru:
    """A bounded insertion-ordered map (least recently set or read goes first)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._items: OrderedDict[bytes, object] = OrderedDict()

    def get(self, key: bytes) -> object | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def set(self, key: bytes, value: object) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def __contains__(self, key: bytes) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)


class ScoreMemo:
    """Scores by token prefix: `memo.get(ids, p)` is the score read at position p of an
    input starting with `ids[:p + 1]`, if one was recorded."""

    def __init__(self, capacity: int = 1 << 18) -> None:
        self._lru = _Lru(capacity)

    def lookup(self, token_ids: Sequence[int], positions: Sequence[int]) -> list[float | None]:
        keys = prefix_digests(token_ids, [p + 1 for p in positions])
        return [self._lru.get(k) for k in keys]  # type: ignore[misc]

    def record(self, token_ids: Sequence[int], scores: dict[int, float]) -> None:
        positions = sorted(scores)
        for key, p in zip(prefix_digests(token_ids, [p + 1 for p in positions]), positions):
            self._lru.set(key, scores[p])

    def __len__(self) -> int:
        return len(self._lru)


class PrefixGate:
    """Orders requests so that a shared prefix is computed once, then read from the cache.

    `async with gate.hold(ids): ...send the request...` waits while another held request
    is computing one of the full blocks of `ids` (or the same whole prompt), then holds
    the blocks not yet computed (by a request that finished) until the body exits.
    `waits` counts the waits.
    """

    def __init__(self, block_size: int, *, remember: int = 1 << 18) -> None:
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.block_size = block_size
        self._open: dict[bytes, asyncio.Future[None]] = {}
        self._done = _Lru(remember)  # blocks some finished request computed (assumed cached)
        self.waits = 0

    def block_keys(self, token_ids: Sequence[int]) -> list[bytes]:
        """Chained keys of the full blocks of `token_ids` that vLLM could cache. vLLM
        always computes the last prompt token, so a block ending there is not counted."""
        full = (len(token_ids) - 1) // self.block_size
        return prefix_digests(token_ids, [(k + 1) * self.block_size for k in range(full)])

    @asynccontextmanager
    async def hold(self, token_ids: Sequence[int]) -> AsyncIterator[None]:
        # The whole prompt is a key too: an identical prompt waits for the first one and
        # then finds its scores in the memo instead of computing them again.
        keys = self.block_keys(token_ids) + prefix_digests(token_ids, [len(token_ids)])
        while True:
            # The deepest block of this prompt that a request in flight is computing.
            pending = next((self._open[k] for k in reversed(keys) if k in self._open), None)
            if pending is None:
                break
            self.waits += 1
            await asyncio.shield(pending)
        mine = [k for k in keys if k not in self._done]
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for k in mine:
            self._open[k] = future
        computed = False
        try:
            yield
            computed = True
        finally:
            for k in mine:
                if self._open.get(k) is future:
                    del self._open[k]
                if computed:  # a failed or cancelled request may not have cached them
                    self._done.set(k, True)
            future.set_result(None)
