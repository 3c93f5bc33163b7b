"""One progress display for a whole experiment: searches done (with ETA), runs done,
generated and PRM tokens per second."""

from __future__ import annotations

import time

from tqdm.auto import tqdm

from ttsearch.core.scheduler import Usage

__all__ = ["ExperimentProgress"]


class ExperimentProgress:
    def __init__(self, *, total: int, done: int, runs: int, runs_done: int, enabled: bool = True) -> None:
        self._bar = tqdm(
            total=total, initial=done, disable=not enabled, desc="experiment", unit="search", dynamic_ncols=True
        )
        self._runs, self._runs_done = runs, runs_done
        self._generated = self._verifier = 0
        self._started = time.perf_counter()
        self._postfix()

    def update(self, usage: Usage, *, run_finished: bool) -> None:
        self._generated += usage.generated_tokens
        self._verifier += usage.verifier_tokens
        self._runs_done += run_finished
        self._postfix()
        self._bar.update(1)

    def _postfix(self) -> None:
        elapsed = max(time.perf_counter() - self._started, 1e-9)
        self._bar.set_postfix_str(
            f"runs {self._runs_done}/{self._runs}, gen {self._generated / elapsed:,.0f} tok/s, "
            f"PRM {self._verifier / elapsed:,.0f} tok/s",
            refresh=False,
        )

    def close(self) -> None:
        self._bar.close()
