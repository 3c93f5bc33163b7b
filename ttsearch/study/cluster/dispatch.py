"""Which search a Ray worker gets next: the driver's bookkeeping of work items, no Ray.

A work item is one (run, problem) search of the experiment's plan. Items are handed out
run by run, in plan order (the order `run_experiment` searches them), each to the first
worker with room that asks (dynamic pull: a fast worker is never idle behind a slow one).
Within the earliest run with work left, a worker gets, in this order of preference:

1. the problems it searched before (their prompt is in its engines' prefix caches: the
   runs of one problem at several N and seeds share it), then
2. problems no worker has searched yet (they become its own), then
3. another worker's problems (when nothing else is left: stealing beats idling).

An item whose worker died, or whose search raised on it, is handed out again, to a
worker it has not failed on where one is alive; an item that has failed on two different
workers (or twice where no other worker is left) is given up: the driver records it as
an error with the cause, and the run goes on. An item that came back is never handed out
again.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["Dispatcher", "WorkItem"]


@dataclass(eq=False)
class WorkItem:
    """One (run, problem) search; identity is the object (one per search of the plan)."""

    run: int  # index into the plan's runs
    problem: int  # index into the experiment's problems
    failures: list[tuple[int, str]] = field(default_factory=list)  # (worker, cause) of each failed try

    @property
    def failed_on(self) -> set[int]:
        return {worker for worker, _ in self.failures}

    @property
    def cause(self) -> str:
        """Why the item was given up: every failed try, worker by worker."""
        return "; ".join(f"worker {worker}: {cause}" for worker, cause in self.failures)


class Dispatcher:
    """Pending and in-flight work items, per run and per worker (workers 0 .. workers-1)."""

    def __init__(self, items: Iterable[WorkItem], workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self._pending: dict[int, OrderedDict[int, WorkItem]] = {}  # run -> items in plan order (by id)
        for item in items:
            self._pending.setdefault(item.run, OrderedDict())[id(item)] = item
        self._in_flight: list[dict[int, WorkItem]] = [{} for _ in range(workers)]
        self._home: dict[int, int] = {}  # problem -> the worker that first searched it
        self._live = set(range(workers))

    @property
    def finished(self) -> bool:
        """Every item has come back or been given up."""
        return not self._pending and not any(self._in_flight)

    @property
    def pending(self) -> int:
        return sum(len(items) for items in self._pending.values())

    def in_flight(self, worker: int) -> int:
        return len(self._in_flight[worker])

    def take(self, worker: int) -> WorkItem | None:
        """The next item for `worker` (now in flight on it), or None when none suits it now."""
        assert worker in self._live, f"worker {worker} is retired"
        for run in sorted(self._pending):
            item = self._pick(self._pending[run], worker)
            if item is None:
                continue
            del self._pending[run][id(item)]
            if not self._pending[run]:
                del self._pending[run]
            self._in_flight[worker][id(item)] = item
            home = self._home.get(item.problem)
            if home is None or home not in self._live:
                self._home[item.problem] = worker
            return item
        return None

    def returned(self, worker: int, item: WorkItem) -> None:
        """`item` came back from `worker` with a result: it is done for good."""
        del self._in_flight[worker][id(item)]

    def failed(self, worker: int, item: WorkItem, cause: str) -> bool:
        """`item` failed on `worker` (the worker died, or its search raised). Returns True
        when it is given up (the caller records the error), False when it was put back."""
        del self._in_flight[worker][id(item)]
        item.failures.append((worker, cause))
        tried = item.failed_on
        if len(tried) >= 2 or (len(item.failures) >= 2 and not self._live - tried):
            return True
        if not self._live:
            return True  # no worker is left to try it; the driver stops the run
        runs = self._pending.setdefault(item.run, OrderedDict())
        runs[id(item)] = item
        runs.move_to_end(id(item), last=False)  # first in its run: it was handed out before the rest
        return False

    def retire(self, worker: int) -> None:
        """`worker` is gone for good (Ray will not restart it): its problems lose their home."""
        assert not self._in_flight[worker], "a retired worker's items are failed first"
        self._live.discard(worker)

    @property
    def live_workers(self) -> int:
        return len(self._live)

    def _pick(self, items: OrderedDict[int, WorkItem], worker: int) -> WorkItem | None:
        unhomed = stolen = None
        for item in items.values():
            if worker in item.failed_on and self._live - item.failed_on:
                continue  # another live worker has not failed on it yet: it goes there
            home = self._home.get(item.problem)
            if home == worker:
                return item
            if home is None or home not in self._live:
                unhomed = unhomed or item
            else:
                stolen = stolen or item
        return unhomed or stolen
