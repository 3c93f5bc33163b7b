"""How many times Ray restarted the workers: the driver's count, no Ray.

A worker's death is seen in two ways: a call to it fails with its process (a search, or
the start of its engines), or it answers from a new process (it died while idle or while
starting, and Ray restarted it before the driver called again). Both ways count one
restart per process that died: every slot of a dead worker fails, and a start may fail
several times while Ray brings the actor back, but that is one death.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["RestartCount"]


@dataclass
class RestartCount:
    """Restarts of workers 0 .. workers-1 as the driver sees them."""

    workers: int
    total: int = 0
    # The process each worker was last seen alive in (None: not seen yet, or seen to die).
    _pid: list[int | None] = field(init=False)
    # A counted death whose new process has not answered yet (undone if it never does).
    _pending: list[bool] = field(init=False)

    def __post_init__(self) -> None:
        self._pid = [None] * self.workers
        self._pending = [False] * self.workers

    def pid(self, worker: int) -> int | None:
        """The process `worker` was last seen alive in."""
        return self._pid[worker]

    def died(self, worker: int) -> None:
        """A call to `worker` failed with its process."""
        if self._pid[worker] is not None:
            self._pid[worker], self._pending[worker] = None, True
            self.total += 1

    def answered(self, worker: int, pid: int) -> None:
        """`worker` answered from process `pid`."""
        if self._pid[worker] is not None and pid != self._pid[worker]:
            self.total += 1
        self._pid[worker], self._pending[worker] = pid, False

    def gone(self, worker: int) -> None:
        """Ray will not restart `worker`: a death counted for it was no restart."""
        self.total -= self._pending[worker]
        self._pending[worker] = False
