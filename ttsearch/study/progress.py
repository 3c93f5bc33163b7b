"""One progress display for a whole experiment: searches done (with ETA), runs done,
generated and PRM tokens per second, and, where there are any, how many of the searches
are failed problems retried and how many answers are left ungraded."""

from __future__ import annotations

import time

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
        self._started = time.perf_counter()
        self._postfix()

    def update(self, usage: Usage, *, run_finished: bool, ungraded: bool = False) -> None:
        self._generated += usage.generated_tokens
        self._verifier += usage.verifier_tokens
        self._runs_done += run_finished
        self._ungraded += ungraded
        self._postfix()
        self._bar.update(1)

    def _postfix(self) -> None:
        elapsed = max(time.perf_counter() - self._started, 1e-9)
        parts = [f"runs {self._runs_done}/{self._runs}"]
        if self._retried:
            parts.append(f"{self._retried} failed retried")
        if self._ungraded:
            parts.append(f"{self._ungraded} ungraded")
        parts.append(f"gen {self._generated / elapsed:,.0f} tok/s, PRM {self._verifier / elapsed:,.0f} tok/s")
        self._bar.set_postfix_str(", ".join(parts), refresh=False)

    def close(self) -> None:
        self._bar.close()
