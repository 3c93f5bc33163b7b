"""Problem affinity, shared by the backends that spread one role over several engines.

A problem's prefix cache lives on the engine that computed it, so every request of a
problem should go to the same one. Two small pieces:

- `ProblemPrefixes`: which problem a policy prompt belongs to. Every prompt of a problem
  starts with the prompt `encode_problem` returned for it; the key is that prompt (the
  longest registered one the request starts with). Used by `OpenAIPolicy` (servers) and
  `VLLMPolicy` (data-parallel ranks). Verifiers need none: their key is the question.
- `StickyLeastLoaded`: the routing rule, over data-parallel ranks (`RankAffinity`, for
  `VLLMPolicy`) and servers (`ReplicaPool`): the first request of a new key goes to the
  least-loaded target (fewest requests in flight, then fewest problems), later requests
  of that key follow it.

Both keep the most recently used `max_problems` keys: nothing tells a backend that a
problem finished, and the search runs far fewer problems at once than that, so a key
forgotten is one that no request has used for thousands of problems.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager

__all__ = ["DEFAULT_MAX_PROBLEMS", "ProblemPrefixes", "RankAffinity", "StickyLeastLoaded"]

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


class StickyLeastLoaded:
    """The routing rule both backend families share, over `size` targets (data-parallel
    ranks, or servers): the first request of a new key goes to the least-loaded usable
    target (fewest requests in flight, then fewest problems), later requests of that key
    follow it while it stays usable; the `max_problems` most recently used keys are kept."""

    def __init__(self, size: int, *, max_problems: int = DEFAULT_MAX_PROBLEMS) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        if max_problems < 1:
            raise ValueError(f"max_problems must be >= 1, got {max_problems}")
        self.size = size
        self._max = max_problems
        self.in_flight = [0] * size  # requests sent to each target and not yet finished
        self.problems = [0] * size  # keys assigned to each target
        self._home: OrderedDict[Hashable, int] = OrderedDict()

    def home_of(self, key: Hashable) -> int | None:
        """The target `key`'s requests go to (None: none yet, or forgotten)."""
        return self._home.get(key)

    def pick(self, key: Hashable | None, usable: Callable[[int], bool] = lambda _: True) -> int | None:
        """The target for one request of `key` (None as key: no problem known, the least
        loaded, no affinity kept). A key whose target is no longer `usable` moves, with
        its problem count. Returns None when no target is usable."""
        home = None if key is None else self._home.get(key)
        if home is not None and usable(home):
            self._home.move_to_end(key)
            return home
        candidates = [i for i in range(self.size) if usable(i)]
        if not candidates:
            return None
        best = min(candidates, key=lambda i: (self.in_flight[i], self.problems[i]))
        if key is None:
            return best
        if home is not None:
            self.problems[home] -= 1
        self._home[key] = best
        self._home.move_to_end(key)
        self.problems[best] += 1
        if len(self._home) > self._max:
            _, old = self._home.popitem(last=False)
            self.problems[old] -= 1
        return best

    @contextmanager
    def counted(self, target: int) -> Iterator[int]:
        """Count one request in flight at `target` until the block exits."""
        self.in_flight[target] += 1
        try:
            yield target
        finally:
            self.in_flight[target] -= 1


class RankAffinity:
    """Which of `ranks` data-parallel ranks each request goes to (see the module).
    Ranks never go down (a dead rank kills the engine)."""

    def __init__(self, ranks: int, *, max_problems: int = DEFAULT_MAX_PROBLEMS) -> None:
        if ranks < 1:
            raise ValueError(f"ranks must be >= 1, got {ranks}")
        self.ranks = ranks
        self._router = StickyLeastLoaded(ranks, max_problems=max_problems)

    @property
    def in_flight(self) -> list[int]:
        return self._router.in_flight

    @property
    def problems(self) -> list[int]:
        return self._router.problems

    def rank_of(self, key: Hashable) -> int | None:
        """The rank `key`'s requests go to (None: none yet, or forgotten)."""
        return self._router.home_of(key)

    @contextmanager
    def route(self, key: Hashable | None) -> Iterator[int]:
        """The rank for one request of `key` (None: no problem known, the least-loaded
        rank, no affinity kept), counted in flight there until the block exits."""
        rank = self._router.pick(key)
        assert rank is not None  # every rank is usable
        with self._router.counted(rank):
            yield rank
