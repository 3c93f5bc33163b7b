"""One progress display for a whole experiment: searches done (with ETA), runs done,
generated and PRM tokens per second, and, where there are any, how many of the searches
are failed problems retried and how many answers are left ungraded. On Ray
(`ttsearch.study.cluster`) also the workers: searches in flight on each, and restarts."""

from __future__ import annotations

import time
from collections.abc import Sequence

from tqdm.auto import tqdm

from ttsearch.core.scheduler import Usage

__all__ = ["ExperimentProgress"]


class ExperimentProgress:
    def __init__(
        self, *, total: int, done: int, runs: int, runs_done: int, retried: int = 0, enabled: bool = True
    ) -> None:
        self._bar = tqdm(
            total=total, initial=done, disable=not enabled, desc="experiment", unit="search", dynamic_ncols=True
        )
        self._runs, self._runs_done = runs, runs_done
        self._retried = retried  # of the searches left, failed problems searched again
        self._ungraded = 0
        self._generated = self._verifier = 0
        self._workers: tuple[int | None, ...] = ()  # searches in flight per worker (None: not up)
        self._restarts = 0
        self._started = time.perf_counter()
        self._postfix()

    def update(self, usage: Usage, *, run_finished: bool, ungraded: bool = False) -> None:
        self._generated += usage.generated_tokens
        self._verifier += usage.verifier_tokens
        self._runs_done += run_finished
        self._ungraded += ungraded
        self._postfix()
        self._bar.update(1)

    def set_workers(self, in_flight: Sequence[int | None], restarts: int) -> None:
        """Ray workers: searches in flight on each (None: starting or gone), restarts so far.
        Redrawn at once when a worker comes up, goes down or restarts; in-flight counts
        show with the next finished search."""
        states = [n is None for n in in_flight], restarts
        changed = states != ([n is None for n in self._workers], self._restarts)
        self._workers, self._restarts = tuple(in_flight), restarts
        self._postfix()
        if changed:
            self._bar.refresh()

    def _postfix(self) -> None:
        elapsed = max(time.perf_counter() - self._started, 1e-9)
        parts = [f"runs {self._runs_done}/{self._runs}"]
        if self._retried:
            parts.append(f"{self._retried} failed retried")
        if self._ungraded:
            parts.append(f"{self._ungraded} ungraded")
        if self._workers:
            flights = " ".join("-" if n is None else str(n) for n in self._workers)
            up = sum(n is not None for n in self._workers)
            parts.append(f"workers {up}/{len(self._workers)} in flight [{flights}], {self._restarts} restarts")
        parts.append(f"gen {self._generated / elapsed:,.0f} tok/s, PRM {self._verifier / elapsed:,.0f} tok/s")
        self._bar.set_postfix_str(", ".join(parts), refresh=False)

    def close(self) -> None:
        self._bar.close()
