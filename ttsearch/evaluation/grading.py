"""Answer grading: is a predicted answer mathematically equivalent to the gold answer?

Built on math-verify (`math_verify.parse` / `verify`, over latex2sympy2_extended), Hugging
Face's maintained grader used by open-r1 and lighteval; the older latex2sympy2 is
unmaintained. Two things math-verify does not give us:

* Bounded time from any thread. Its timeouts use `signal.alarm`, which only works on the main
  thread, and a sympy call stuck in C (``10^{10^{10}}``) cannot be interrupted by a signal
  at all. So every math-verify call runs in a small pool of worker processes; a comparison
  that overruns its deadline gets its worker killed (and lazily replaced) and counts as not
  equivalent. A worker that cannot start at all is no verdict: `GradingError` (the caller
  records the answer as ungraded, never as wrong); the next comparison tries to start one
  again.
* Speed. Before any worker is involved, answers are compared in-process by their canonical
  keys (`ttsearch.evaluation.canonical`): equal keys are equivalent, and two different plain
  exact rationals (``3`` vs ``\\frac{5}{2}``) are not.

Inputs may be bare answers (``\\frac{1}{2}``), math-mode answers (``$\\frac12$``,
``\\boxed{...}``) or whole solutions (math-verify extracts the answer from text). The gold
answer goes first: math-verify is not symmetric (a gold ``x = 3`` matches ``3``).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing.connection
import queue
import re
import socket
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import sympy

from ttsearch.errors import GradingError
from ttsearch.evaluation.canonical import (
    canonical_form,
    normalize_answer,
    numeric_value,
    strip_wrappers,
)

__all__ = ["Grader", "GradingError", "is_equivalent", "quick_verdict"]

_STARTUP_TIMEOUT_S = 120.0  # a fresh worker importing sympy + math-verify; not a grading deadline
_DEFAULT_MEMORY_LIMIT_MB = 4096
# An unescaped `$`, `\(`, `\[` or a box: math-verify can find the answer itself. Anything else
# is a bare answer that math-verify's LaTeX extractor only sees inside math delimiters.
_DELIMITED_RE = re.compile(r"(?<!\\)\$|\\\(|\\\[|\\boxed|\\fbox")
_INEXACT_HINTS = (".", "%", "percent", "pct")  # decimals/percents: math-verify may round
_WORDS_RE = re.compile(r"[A-Za-z]{3,}(?: [A-Za-z]{3,})*")  # "no solution", "undefined"
_NUMERIC_DIGITS = 30
_NUMERIC_RTOL = 1e-12


# ---------------------------------------------------------------------------------------------
# In-process fast path
# ---------------------------------------------------------------------------------------------


def quick_verdict(gold: Any, pred: Any) -> bool | None:
    """Decide equivalence in-process when that is cheap and certain, else None.

    True for identical strings and equal canonical keys. False for non-strings, empty answers,
    two exact numbers (integers, fractions, radicals, pi; no decimals or percents, where
    math-verify's rounding conventions apply) whose values clearly differ, and an exact number
    against a plain-words answer.
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
    if any(h in s.lower() for s in (gold, pred) for h in _INEXACT_HINTS):
        return None
    gold_number, pred_number = gold_key.startswith("#"), pred_key.startswith("#")
    if gold_number and pred_number and _clearly_different(numeric_value(gold), numeric_value(pred)):
        return False
    # An exact number against a word answer ("\text{no solution}"); one-letter and two-letter
    # words are left to math-verify, as they may be constants or variables (e, pi, x).
    if gold_number != pred_number:
        other = pred if gold_number else gold
        if _WORDS_RE.fullmatch(normalize_answer(other)):
            return False
    return None


def _clearly_different(a: sympy.Expr | None, b: sympy.Expr | None) -> bool:
    if a is None or b is None:
        return False
    if isinstance(a, sympy.Rational) and isinstance(b, sympy.Rational):
        return bool(a != b)
    try:
        # Bounded exact numbers (see canonical.py), so evalf is a short computation.
        x, y = complex(sympy.N(a, _NUMERIC_DIGITS)), complex(sympy.N(b, _NUMERIC_DIGITS))
    except Exception:
        return False
    return abs(x - y) > _NUMERIC_RTOL * max(1.0, abs(x), abs(y))


# ---------------------------------------------------------------------------------------------
# Worker process side
# ---------------------------------------------------------------------------------------------


def _views(answer: str) -> list[str]:
    """The strings math-verify is asked to parse for one answer: as given, then normalised.

    The normalised view only exists for a bare answer (nothing but the answer inside its
    `$`/`\\boxed` wrappers): normalising free text would glue its words and numbers together.
    """
    views = [answer if _DELIMITED_RE.search(answer) else f"${answer}$"]
    if not _DELIMITED_RE.search(strip_wrappers(answer)):
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
        if not (gold_parsed and pred_parsed):
            continue
        if verify(gold_parsed, pred_parsed, timeout_seconds=alarm_s):
            return True
    return False


def _worker_main(fd: int, memory_limit_mb: int) -> None:
    """Worker process loop: receive (gold, pred, budget), answer a bool, until EOF."""
    import resource
    import signal
    import warnings

    # Ctrl-C reaches the whole process group; the parent decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if memory_limit_mb > 0:
        # A huge sympy integer should fail with MemoryError here, not swap the machine.
        limit = memory_limit_mb << 20
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        soft = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)  # math-verify logs every timeout and parse failure
    # Warm up before "ready" (imports, the ANTLR parser, sympy caches: about half a second),
    # so that a fresh worker's first comparison is not charged for it against its deadline.
    try:
        _compare_in_worker("$\\frac{x+1}{2}$", "$(x+1)/2$", 5.0)
    except Exception:
        pass

    conn = multiprocessing.connection.Connection(fd)
    conn.send("ready")
    while True:
        try:
            gold, pred, budget_s = conn.recv()
        except (EOFError, OSError):
            return
        try:
            verdict = _compare_in_worker(gold, pred, budget_s)
        except BaseException:
            verdict = False
        try:
            conn.send(bool(verdict))
        except OSError:
            return


# ---------------------------------------------------------------------------------------------
# Parent side
# ---------------------------------------------------------------------------------------------

# Workers are plain `python -c` subprocesses, not multiprocessing children: spawn and
# forkserver children re-import the caller's __main__ (breaking scripts without a main guard),
# and fork would copy the parent's threads (asyncio, vLLM) into a broken child.
# The worker imports the same `ttsearch` as the parent: its root goes first on sys.path unless
# it is already there (an installed package), so a source checkout works without installing.
_WORKER_BOOT = (
    "import sys; root = sys.argv[3]; root in sys.path or sys.path.insert(0, root); "
    "from ttsearch.evaluation.grading import _worker_main; "
    "_worker_main(int(sys.argv[1]), int(sys.argv[2]))"
)
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the directory holding `ttsearch/`


class _Worker:
    """One worker process, started on first use and again after every kill."""

    def __init__(self, memory_limit_mb: int | None) -> None:
        self._memory_limit_mb = memory_limit_mb or 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: multiprocessing.connection.Connection | None = None
        self.shut_down = False  # set by the grader's close(): never start again

    def _start(self) -> multiprocessing.connection.Connection:
        parent_sock, child_sock = socket.socketpair()
        fd = child_sock.fileno()
        # -P: the caller's working directory must not shadow modules in the worker.
        args = [sys.executable, "-P", "-c", _WORKER_BOOT]
        args += [str(fd), str(self._memory_limit_mb), _PACKAGE_ROOT]
        try:
            self._proc = subprocess.Popen(args, pass_fds=[fd], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        except OSError as e:
            parent_sock.close()
            raise GradingError(f"cannot start the grader worker ({sys.executable}): {e}") from e
        finally:
            child_sock.close()
        self._conn = conn = multiprocessing.connection.Connection(parent_sock.detach())
        try:
            ready = conn.poll(_STARTUP_TIMEOUT_S) and conn.recv() == "ready"
        except (EOFError, OSError):
            ready = False
        if not ready:
            raise self._start_failed()
        return conn

    def _start_failed(self) -> GradingError:
        """Stop the worker that did not start and say why: it exited, or it stayed silent."""
        proc = self._proc
        try:
            status = proc.wait(timeout=1.0) if proc is not None else None
        except subprocess.TimeoutExpired:
            status = None
        self.stop()
        why = f"exit status {status}" if status is not None else f"no answer in {_STARTUP_TIMEOUT_S:.0f} s"
        return GradingError(f"grader worker did not start ({why}; its error output went to stderr)")

    def compare(self, gold: str, pred: str, timeout: float) -> bool:
        """The worker's verdict; False when it overran `timeout` or died mid-comparison.
        Raises `GradingError` when no worker can start (no verdict at all)."""
        try:
            conn = self._conn
            if conn is None or self._proc is None or self._proc.poll() is not None:
                self.stop()
                if self.shut_down:
                    return False  # the grader was closed while this call waited
                conn = self._start()
            conn.send((gold, pred, timeout))
            if conn.poll(timeout):
                return bool(conn.recv())
        except GradingError:
            raise
        except Exception:
            pass
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


def _shut_down(workers: list[_Worker]) -> None:
    for worker in workers:
        worker.shut_down = True
        worker.stop()


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
        # Also runs if the grader is garbage-collected unclosed, and at interpreter exit.
        self._finalizer = weakref.finalize(self, _shut_down, self._workers)

    def is_equivalent(self, gold: str, pred: str, *, timeout: float | None = None) -> bool:
        """True when `pred` is mathematically equivalent to `gold`. Never raises on any input;
        raises `GradingError` when the comparison needs a worker and none can start.

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

    # `timeout` (ASYNC109 below) bounds the grading worker (as in `is_equivalent`), not the await.
    async def ais_equivalent(self, gold: str, pred: str, *, timeout: float | None = None) -> bool:  # noqa: ASYNC109
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
        self._finalizer()

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
            _default_grader = Grader()  # its finalizer stops the worker at exit
        return _default_grader


def is_equivalent(gold: str, pred: str, *, timeout: float = 5.0) -> bool:
    """`Grader.is_equivalent` on a shared default grader (one worker, stopped at exit);
    raises `GradingError` when the grader cannot run."""
    verdict = quick_verdict(gold, pred)
    if verdict is not None:
        return verdict
    return _get_default_grader().is_equivalent(gold, pred, timeout=timeout)
