"""Process environment for starting vLLM engines (shared by the policy and verifier backends).

vLLM and torch.compile write caches under the user's home by default; on shared or
read-only machines (CI, the CPU development boxes) that fails or leaks state between
projects. `configure_vllm_env()` points them at a writable folder and turns off usage
reporting, but never overrides a variable the user has already set. Call it before the
first engine starts (vLLM reads some variables once, when the engine starts).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["configure_vllm_env", "default_cache_dir"]


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
    }
    changed: dict[str, str] = {}
    for key, value in wanted.items():
        if key not in os.environ:
            os.environ[key] = value
            changed[key] = value
    for key in ("VLLM_CACHE_ROOT", "TORCHINDUCTOR_CACHE_DIR"):
        Path(os.environ[key]).mkdir(parents=True, exist_ok=True)
    return changed
