"""Answer grading: is a predicted answer mathematically equivalent to the gold answer?

Built on math-verify (`math_verify.parse` / `verify`, over latex2sympy2_extended), Hugging
Face's maintained grader used by open-r1 and lighteval; the older latex2sympy2 is
unmaintained. Two things math-verify does not give us:

* Bounded time from any thread. Its timeouts use `signal.alarm`, which only works on the main
  thread, and a sympy call stuck in C (``10^{10^{10}}``) cannot be interrupted by a signal
  at all. So every math-verify call runs in a small pool of worker processes; a comparison
  that overruns its deadline gets its worker killed (and lazily replaced) and counts as not
  equivalent.
* Speed. Before any worker is involved, answers are compared in-process by their canonical
  keys (`ttsearch.evaluation.canonical`): equal keys are equivalent, and two different plain
  exact rationals (``3`` vs ``\\frac{5}{2}``) are not.

Inputs may be bare answers (``\\frac{1}{2}``), math-mode answers (``$\\frac12$``,
``\\boxed{...}``) or whole solutions (math-verify extracts the answer from text). The gold
answer goes first: math-verify is not symmetric (a gold ``x = 3`` matches ``3``).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import multiprocessing.connection
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ttsearch.evaluation.canonical import canonical_form, normalize_answer

__all__ = ["Grader", "is_equivalent", "quick_verdict"]

logger = logging.getLogger(__name__)

_STARTUP_TIMEOUT_S = 120.0  # importing sympy + math-verify in a fresh worker; not a grading deadline
_DEFAULT_MEMORY_LIMIT_MB = 4096
# An unescaped `$`, `\(`, `\[` or a box: math-verify can find the answer itself. Anything else
# is a bare answer that math-verify's LaTeX extractor only sees inside math delimiters.
_DELIMITED_RE = re.compile(r"(?<!\\)\$|\\\(|\\\[|\\boxed|\\fbox")
_EXACT_RATIONAL_RE = re.compile(r"#-?\d+(?:/\d+)?")
_INEXACT_HINTS = (".", "%", "percent", "pct")  # decimals/percents: math-verify may round


# ---------------------------------------------------------------------------------------------
# In-process fast path
# ---------------------------------------------------------------------------------------------


def quick_verdict(gold: Any, pred: Any) -> bool | None:
    """Decide equivalence without sympy when the canonical keys settle it, else None.

    True for equal keys; False for non-strings, empty answers and two different exact
    rationals written without decimals or percents (where math-verify could not disagree).
    """
    if not isinstance(gold, str) or not isinstance(pred, str):
        return False
    gold, pred = gold.strip(), pred.strip()
    if not gold or not pred:
        return False
    if gold == pred:
        return True
    gold_key, pred_key = canonical_form(gold), canonical_form(pred)
    if gold_key and gold_key == pred_key:
        return True
    if (
        _EXACT_RATIONAL_RE.fullmatch(gold_key)
        and _EXACT_RATIONAL_RE.fullmatch(pred_key)
        and not any(h in s.lower() for s in (gold, pred) for h in _INEXACT_HINTS)
    ):
        return False
    return None


# ---------------------------------------------------------------------------------------------
# Worker process side
# ---------------------------------------------------------------------------------------------


def _views(answer: str) -> list[str]:
    """The strings math-verify is asked to parse for one answer: as given, then normalised."""
    views = [answer if _DELIMITED_RE.search(answer) else f"${answer}$"]
    normalized = normalize_answer(answer)
    if normalized and normalized != answer:
        views.append(f"${normalized}$")
    return views


def _compare_in_worker(gold: str, pred: str, budget_s: float) -> bool:
    from math_verify import parse, verify

    deadline = time.monotonic() + budget_s
    # math-verify's own alarms take whole seconds; they end slow Python-level work gracefully,
    # and the parent's kill covers what they cannot interrupt.
    alarm_s = max(1, int(budget_s / 2))
    parsed: dict[str, list[Any]] = {}

    def parsed_view(view: str) -> list[Any]:
        if view not in parsed:
            parsed[view] = parse(view, parsing_timeout=alarm_s)
        return parsed[view]

    gold_views, pred_views = _views(gold), _views(pred)
    pairs = [(g, p) for g, p in zip(gold_views, pred_views)]
    pairs += [(g, p) for g in gold_views for p in pred_views if (g, p) not in pairs]
    for gold_view, pred_view in pairs:
        if time.monotonic() > deadline:
            return False
        gold_parsed, pred_parsed = parsed_view(gold_view), parsed_view(pred_view)
        if gold_parsed and pred_parsed and verify(gold_parsed, pred_parsed, timeout_seconds=alarm_s):
            return True
    return False


def _worker_main(fd: int, memory_limit_mb: int) -> None:
    """Worker process loop: receive (gold, pred, budget), answer a bool, until EOF."""
    import resource
    import warnings

    if memory_limit_mb > 0:
        # A huge sympy integer should fail with MemoryError here, not swap the machine.
        limit = memory_limit_mb << 20
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        soft = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)  # math-verify logs every timeout and parse failure
    import math_verify  # noqa: F401  (import before "ready": startup is not grading time)

    conn = multiprocessing.connection.Connection(fd)
    conn.send("ready")
    while True:
        try:
            gold, pred, budget_s = conn.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            return
        try:
            verdict = _compare_in_worker(gold, pred, budget_s)
        except BaseException:  # noqa: BLE001  timeouts, MemoryError, RecursionError: not equal
            verdict = False
        try:
            conn.send(bool(verdict))
        except (OSError, KeyboardInterrupt):
            return


# ---------------------------------------------------------------------------------------------
# Parent side
# ---------------------------------------------------------------------------------------------

# Workers are plain `python -c` subprocesses, not multiprocessing children: spawn and
# forkserver children re-import the caller's __main__ (breaking scripts without a main guard),
# and fork would copy the parent's threads (asyncio, vLLM) into a broken child.
_WORKER_BOOT = (
    "import sys; from ttsearch.evaluation.grading import _worker_main; "
    "_worker_main(int(sys.argv[1]), int(sys.argv[2]))"
)
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the directory holding `ttsearch/`


class _WorkerStartError(Exception):
    pass


class _Worker:
    """One worker process, started on first use and again after every kill."""

    def __init__(self, memory_limit_mb: int | None) -> None:
        self._memory_limit_mb = memory_limit_mb or 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: multiprocessing.connection.Connection | None = None

    def _start(self) -> multiprocessing.connection.Connection:
        parent_sock, child_sock = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_ROOT, env.get("PYTHONPATH")]))
        args = [sys.executable, "-c", _WORKER_BOOT, str(child_sock.fileno()), str(self._memory_limit_mb)]
        try:
            self._proc = subprocess.Popen(
                args,
                pass_fds=[child_sock.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=env,
            )
        except OSError as e:
            parent_sock.close()
            raise _WorkerStartError("cannot start grader worker") from e
        finally:
            child_sock.close()
        self._conn = conn = multiprocessing.connection.Connection(parent_sock.detach())
        try:
            ready = conn.poll(_STARTUP_TIMEOUT_S) and conn.recv() == "ready"
        except (EOFError, OSError):
            ready = False
        if not ready:
            self.stop()
            raise _WorkerStartError("grader worker did not start")
        return conn

    def compare(self, gold: str, pred: str, timeout: float) -> bool:
        try:
            conn = self._conn
            if conn is None or self._proc is None or self._proc.poll() is not None:
                self.stop()
                conn = self._start()
            conn.send((gold, pred, timeout))
            if conn.poll(timeout):
                return bool(conn.recv())
        except _WorkerStartError:
            logger.warning("grader worker failed to start; counting the answer as not equivalent")
            return False
        except (EOFError, OSError, ValueError):
            pass  # the worker died (or close() killed it) mid-call
        # Overran the deadline (e.g. stuck in C code that a signal cannot interrupt) or died:
        # kill it; the next call starts a fresh one.
        self.stop()
        return False

    def stop(self) -> None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if conn is not None:
            conn.close()
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


class Grader:
    """Answer-equivalence grader over a pool of math-verify worker processes.

    Thread-safe; use as a context manager or call `close()`. Workers start on first need.

    Args:
        timeout: default deadline in seconds for one comparison in a worker.
        workers: number of worker processes (concurrent comparisons).
        memory_limit_mb: address-space limit per worker (None: unlimited).
    """

    def __init__(
        self,
        *,
        timeout: float = 5.0,
        workers: int = 1,
        memory_limit_mb: int | None = _DEFAULT_MEMORY_LIMIT_MB,
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.timeout = timeout
        self._workers = [_Worker(memory_limit_mb) for _ in range(workers)]
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        for worker in self._workers:
            self._idle.put(worker)
        self._closed = False

    def is_equivalent(self, gold: str, pred: str, *, timeout: float | None = None) -> bool:
        """True when `pred` is mathematically equivalent to `gold`. Never raises on any input.

        Blocks for at most about `timeout` seconds (plus queueing behind other threads and, on
        first use or after a kill, a worker start).
        """
        if self._closed:
            raise RuntimeError("grader is closed")
        verdict = quick_verdict(gold, pred)
        if verdict is not None:
            return verdict
        worker = self._idle.get()
        try:
            if self._closed:
                return False
            return worker.compare(gold, pred, self.timeout if timeout is None else timeout)
        finally:
            self._idle.put(worker)

    async def ais_equivalent(self, gold: str, pred: str, *, timeout: float | None = None) -> bool:
        """`is_equivalent` for async code: the worker wait runs in a thread, off the event loop."""
        if self._closed:
            raise RuntimeError("grader is closed")
        verdict = quick_verdict(gold, pred)
        if verdict is not None:
            return verdict
        return await asyncio.to_thread(self.is_equivalent, gold, pred, timeout=timeout)

    def close(self) -> None:
        """Stop the worker processes. Idempotent; later calls raise RuntimeError."""
        self._closed = True
        for worker in self._workers:
            worker.stop()

    def __enter__(self) -> Grader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


_default_grader: Grader | None = None
_default_lock = threading.Lock()


def _get_default_grader() -> Grader:
    global _default_grader
    with _default_lock:
        if _default_grader is None:
            _default_grader = Grader()
            atexit.register(_default_grader.close)
        return _default_grader


def is_equivalent(gold: str, pred: str, *, timeout: float = 5.0) -> bool:
    """`Grader.is_equivalent` on a shared default grader (one worker, closed at exit)."""
    verdict = quick_verdict(gold, pred)
    if verdict is not None:
        return verdict
    return _get_default_grader().is_equivalent(gold, pred, timeout=timeout)
