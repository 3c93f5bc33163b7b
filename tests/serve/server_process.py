"""A real `ttsearch serve` process, for the tests and benchmarks that need one.

    command = ServeCommand.on_free_port(recipe, flags=("--max-concurrent-problems", "32"))
    with ServerProcess.start(command, tmp_path / "server.log") as server:
        ...  # server.url answers /health
    # left the block: stopped by SIGTERM, exited 0, every process of its session gone

The server runs in a session of its own, so that vLLM's engine processes can be found and
killed with it. Every failure (it exited, never became healthy, did not stop cleanly)
raises `ServerError` with the tail of the server's log, where the reason is. No pytest
here: `benchmarks/serve_load.py` uses it too.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx

__all__ = ["ServeCommand", "ServerError", "ServerProcess", "free_port", "session_processes"]

# Two toy engines start in ~40 s on a quiet 2-core machine; minutes on a loaded one.
STARTUP_SECONDS = 600.0
# SIGTERM: uvicorn stops (timeout_graceful_shutdown=5 s), then the engines close.
STOP_SECONDS = 60.0
# Engine processes exit shortly after their owner; the kernel needs a moment after SIGKILL.
SESSION_END_SECONDS = 20.0
LOG_TAIL_CHARS = 3000


class ServerError(RuntimeError):
    """The server did not start, or did not stop as it should (the message ends with its log's tail)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the kernel's pick; it could be taken again before use)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True, slots=True)
class ServeCommand:
    """`python -m ttsearch.cli serve [RECIPE] --host HOST --port PORT FLAGS...`."""

    recipe: Path | None  # None: the toy world
    port: int
    host: str = "127.0.0.1"
    flags: tuple[str, ...] = ()

    @classmethod
    def on_free_port(cls, recipe: Path | None, *, flags: tuple[str, ...] = ()) -> ServeCommand:
        return cls(recipe, free_port(), flags=flags)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def argv(self) -> list[str]:
        recipe = [] if self.recipe is None else [str(self.recipe)]
        return [
            *(sys.executable, "-m", "ttsearch.cli", "serve", *recipe),
            *("--host", self.host, "--port", str(self.port), *self.flags),
        ]


def session_processes(session: int) -> list[int]:
    """The live processes of session `session`, zombies left out (read from /proc, Linux).

    By session rather than process group: a child that moved to a group of its own would
    escape `killpg`, and must still count as a survivor. Zombies are dead: an orphan's
    stays until its new parent reaps it, which is not the server's doing."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # it ended while we looked
            continue
        # "pid (comm) state ppid pgrp session ...": comm may hold spaces and parentheses.
        state, _ppid, _pgrp, sid = stat[stat.rindex(")") + 2 :].split()[:4]
        if int(sid) == session and state != "Z":
            alive.append(int(entry.name))
    return alive


class ServerProcess:
    """A started `ttsearch serve` (use `start`); a context manager that `stop`s it on exit."""

    def __init__(self, command: ServeCommand, log: Path, process: subprocess.Popen[bytes]) -> None:
        self.command = command
        self.log = log
        self.process = process

    @classmethod
    def start(cls, command: ServeCommand, log: Path, *, startup_seconds: float = STARTUP_SECONDS) -> ServerProcess:
        """Start `command` in a session of its own, its output in `log`; return once /health
        answers 200.

        :raises ServerError: it exited, or was not healthy within `startup_seconds` (then
            its session is killed).
        """
        with log.open("w") as sink:  # the child keeps its own copy of the descriptor
            process = subprocess.Popen(command.argv(), stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
        server = cls(command, log, process)
        try:
            server.wait_until_healthy(startup_seconds)
        except BaseException:
            server.kill_session()
            server.wait_for_session_end()
            raise
        return server

    @property
    def url(self) -> str:
        return self.command.url

    @property
    def session(self) -> int:
        """The server's session id (and process group id): its pid, as the session's leader."""
        return self.process.pid

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def wait_until_healthy(self, seconds: float) -> None:
        """:raises ServerError: the process exited, or /health did not answer 200 in time."""
        deadline = time.monotonic() + seconds
        while True:
            code = self.process.poll()
            if code is not None:
                raise ServerError(f"the server exited with status {code} while starting:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise ServerError(f"the server was not healthy after {seconds:.0f} s:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:  # not listening yet
                pass
            time.sleep(0.5)

    def kill_session(self) -> None:
        """SIGKILL every process of the session at once, as `kill -9 -PGID` would; returns
        at once (`wait_for_session_end` waits for them to be gone)."""
        try:
            os.killpg(self.session, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for pid in session_processes(self.session):  # any that left the process group
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def wait_for_session_end(self, seconds: float = SESSION_END_SECONDS) -> list[int]:
        """Reap the server and wait until no process of its session is alive; the pids still
        alive after `seconds` (empty: all gone)."""
        deadline = time.monotonic() + seconds
        while True:
            self.process.poll()  # reap the leader: a zombie of ours would count as alive in /proc
            alive = session_processes(self.session)
            if not alive or time.monotonic() > deadline:
                return alive
            time.sleep(0.1)

    def stop(self, seconds: float = STOP_SECONDS) -> None:
        """SIGTERM the server; it must exit 0 within `seconds` and take every process of its
        session with it. Whatever happens, nothing of the session is left running.

        :raises ServerError: a non-zero exit, no exit in time, or processes that outlived it.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # the server only, as `kill PID` would
        try:
            code: int | None = self.process.wait(seconds)
        except subprocess.TimeoutExpired:
            code = None
        survivors = self.wait_for_session_end()
        if code is None or survivors:
            self.kill_session()
            self.wait_for_session_end()
        if code is None:
            raise ServerError(f"the server did not exit within {seconds:.0f} s of SIGTERM:\n{self.log_tail()}")
        if code != 0:
            raise ServerError(f"the server exited with status {code} after SIGTERM:\n{self.log_tail()}")
        if survivors:
            raise ServerError(f"processes {survivors} of the server's session outlived it:\n{self.log_tail()}")

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
