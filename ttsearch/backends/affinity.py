"""Problem affinity, shared by the backends that spread one role over several engines.

A problem's prefix cache lives on the engine that computed it, so every request of a
problem should go to the same one. Two small pieces:

- `ProblemPrefixes`: which problem a policy prompt belongs to. Every prompt of a problem
  starts with the prompt `encode_problem` returned for it; the key is that prompt (the
  longest registered one the request starts with). Used by `OpenAIPolicy` (servers) and
  `VLLMPolicy` (data-parallel ranks). Verifiers need none: their key is the question.
- `RankAffinity`: which of an in-process engine's data-parallel ranks a request goes to,
  by the rule `ReplicaPool` applies to servers: the first request of a new key goes to
  the least-loaded rank (fewest requests in flight, then fewest problems), later
  requests of that key follow it. Ranks do not go down (a dead rank kills the engine).

Both keep the most recently used `max_problems` keys: nothing tells a backend that a
problem finished, and the search runs far fewer problems at once than that, so a key
forgotten is one that no request has used for thousands of problems.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Hashable, Iterator, Sequence
from contextlib import contextmanager

__all__ = ["DEFAULT_MAX_PROBLEMS", "ProblemPrefixes", "RankAffinity"]

DEFAULT_MAX_PROBLEMS = 4096


class ProblemPrefixes:
    """The problem prompts registered (`add`), the `max_problems` most recently used kept;
    `key_of(prompt)` is the longest of them `prompt` starts with."""

    def __init__(self, max_problems: int = DEFAULT_MAX_PROBLEMS) -> None:
        if max_problems < 1:
            raise ValueError(f"max_problems must be >= 1, got {max_problems}")
        self._max = max_problems
        self._recent: OrderedDict[tuple[int, ...], None] = OrderedDict()
        self._by_length: dict[int, set[tuple[int, ...]]] = {}
        self._lengths: list[int] = []  # the keys of _by_length, ascending

    def __len__(self) -> int:
        return len(self._recent)

    def add(self, prompt: Sequence[int]) -> tuple[int, ...]:
        """Register a problem's prompt (the key of its requests); returns the key."""
        key = tuple(prompt)
        if key in self._recent:
            self._recent.move_to_end(key)
            return key
        self._recent[key] = None
        bucket = self._by_length.get(len(key))
        if bucket is None:
            bucket = self._by_length[len(key)] = set()
            bisect.insort(self._lengths, len(key))
        bucket.add(key)
        if len(self._recent) > self._max:
            self._forget(next(iter(self._recent)))
        return key

    def key_of(self, prompt: Sequence[int]) -> tuple[int, ...] | None:
        """The longest registered prompt `prompt` starts with (None: none; no affinity)."""
        for length in reversed(self._lengths[: bisect.bisect_right(self._lengths, len(prompt))]):
            head = tuple(prompt[:length])
            if head in self._by_length[length]:
                self._recent.move_to_end(head)
                return head
        return None

    def _forget(self, key: tuple[int, ...]) -> None:
        del self._recent[key]
        bucket = self._by_length[len(key)]
        bucket.discard(key)
        if not bucket:
            del self._by_length[len(key)]
            self._lengths.remove(len(key))


class RankAffinity:
    """Which of `ranks` data-parallel ranks each request goes to (see the module)."""

    def __init__(self, ranks: int, *, max_problems: int = DEFAULT_MAX_PROBLEMS) -> None:
        if ranks < 1:
            raise ValueError(f"ranks must be >= 1, got {ranks}")
        if max_problems < 1:
            raise ValueError(f"max_problems must be >= 1, got {max_problems}")
        self.ranks = ranks
        self._max = max_problems
        self.in_flight = [0] * ranks  # requests sent to each rank and not yet finished
        self.problems = [0] * ranks  # keys assigned to each rank
        self._rank_of: OrderedDict[Hashable, int] = OrderedDict()

    def rank_of(self, key: Hashable) -> int | None:
        """The rank `key`'s requests go to (None: none yet, or forgotten)."""
        return self._rank_of.get(key)

    @contextmanager
    def route(self, key: Hashable | None) -> Iterator[int]:
        """The rank for one request of `key` (None: no problem known, the least-loaded
        rank, no affinity kept), counted in flight there until the block exits."""
        rank = self._pick(key)
        self.in_flight[rank] += 1
        try:
            yield rank
        finally:
            self.in_flight[rank] -= 1

    def _pick(self, key: Hashable | None) -> int:
        if key is not None and (rank := self._rank_of.get(key)) is not None:
            self._rank_of.move_to_end(key)
            return rank
        best = min(range(self.ranks), key=lambda r: (self.in_flight[r], self.problems[r]))
        if key is None:
            return best
        self._rank_of[key] = best
        self.problems[best] += 1
        if len(self._rank_of) > self._max:
            _, old = self._rank_of.popitem(last=False)
            self.problems[old] -= 1
        return best
