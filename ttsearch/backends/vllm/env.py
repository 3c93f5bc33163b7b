"""Process environment and shutdown for vLLM engines (shared by the policy and verifier backends).

vLLM and torch.compile write caches under the user's home by default; on shared or
read-only machines (CI, the CPU development boxes) that fails or leaks state between
projects. `configure_vllm_env()` points them at a writable folder and turns off usage
reporting, but never overrides a variable the user has already set. Call it before the
first engine starts (vLLM reads some variables once, when the engine starts).

`shutdown_engine()` shuts an `AsyncLLM` down and cleans up what vLLM leaves behind.
"""

from __future__ import annotations

import inspect
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["configure_vllm_env", "default_cache_dir", "shutdown_engine"]

logger = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """Where vLLM / TorchInductor caches go unless the user chose: `$TTSEARCH_CACHE_DIR`,
    else a per-user folder in the system temp dir (kept across runs, so compiled
    kernels are reused)."""
    if env := os.environ.get("TTSEARCH_CACHE_DIR"):
        return Path(env)
    user = os.environ.get("USER") or str(os.getuid())
    return Path(tempfile.gettempdir()) / f"ttsearch-cache-{user}"


def configure_vllm_env(cache_dir: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """Set the environment variables vLLM needs here, only where they are unset.

    Returns the variables this call set (empty when the user had set them all).
    Idempotent; safe to call from several backends.
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    wanted = {
        "VLLM_CACHE_ROOT": str(root / "vllm"),
        "TORCHINDUCTOR_CACHE_DIR": str(root / "torchinductor"),
        # No network on CI / dev machines, and nothing to report.
        "VLLM_NO_USAGE_STATS": "1",
        "VLLM_DO_NOT_TRACK": "1",
        # vLLM forks its engine processes unless it sees CUDA initialised in this process;
        # engines started side by side (threads) or after any CUDA call (a reference model,
        # a device query) then die with "Cannot re-initialize CUDA in forked subprocess"
        # (seen on an H200, vLLM 0.26). The CPU platform forces spawn already.
        "VLLM_WORKER_MULTIPROC_METHOD": "spawn",
    }
    changed: dict[str, str] = {}
    for key, value in wanted.items():
        if key not in os.environ:
            os.environ[key] = value
            changed[key] = value
    for key in ("VLLM_CACHE_ROOT", "TORCHINDUCTOR_CACHE_DIR"):
        Path(os.environ[key]).mkdir(parents=True, exist_ok=True)
    return changed


def shutdown_engine(engine: Any, *, timeout: float = 5.0) -> None:
    """Shut a vLLM `AsyncLLM` down (its processes are terminated, then killed after
    `timeout` s), and clean up after it. Call it on the engine's event loop thread (from
    async code: directly, not in a thread), so that vLLM closes its sockets right away.

    Afterwards: vLLM's ZMQ context is terminated (vLLM never does, and pyzmq's "Unclosed
    context" ResourceWarning at garbage collection is an error under pytest's
    filterwarnings=error, raised in whichever test runs the GC); and further `shutdown()`
    calls are no-ops (vLLM keeps the frames of some imports alive, so the engine object can
    live until interpreter exit, where its `__del__` calls shutdown() again after module
    globals are gone: "TypeError: 'NoneType' object is not callable").
    """
    shutdown = engine.shutdown
    try:
        takes_timeout = "timeout" in inspect.signature(shutdown).parameters
    except (TypeError, ValueError):
        takes_timeout = False
    if takes_timeout:
        shutdown(timeout=timeout)
    else:  # older vLLM
        shutdown()
    _terminate_zmq_context(engine)
    engine.shutdown = _already_shut_down


def _already_shut_down(timeout: float | None = None) -> None:
    return None


def _terminate_zmq_context(engine: Any) -> None:
    resources = getattr(getattr(engine, "engine_core", None), "resources", None)
    ctx = getattr(resources, "ctx", None)
    if ctx is None or getattr(ctx, "closed", True):
        return
    output_socket = getattr(resources, "output_socket", None)
    if output_socket is not None and not getattr(output_socket, "closed", False):
        return  # shut down off the loop: vLLM closes the sockets later, on the loop thread
    try:
        ctx.destroy(linger=0)
    except Exception as e:  # best effort: the engine is already shut down
        logger.debug("could not terminate vLLM's ZMQ context: %s", e)
