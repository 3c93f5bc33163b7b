"""Start (or connect to) the recipe's policy and PRM, once for the whole experiment."""

from __future__ import annotations

import io
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from ttsearch.backends.scoring import ScorerMode
from ttsearch.backends.startup import open_backends
from ttsearch.backends.vllm.policy import VLLMPolicy
from ttsearch.backends.vllm.verifier import VLLMVerifier
from ttsearch.core.backend import Policy, Verifier
from ttsearch.study.preflight import Prepared, policy_prompt_options
from ttsearch.study.recipe import ModelSpec

__all__ = ["engine_output_to", "quiet_vllm_logs", "start_backends"]


def quiet_vllm_logs() -> None:
    """Keep vLLM to errors: its per-engine INFO and WARNING lines (hundreds on a CPU) would
    bury the progress display. The engine processes read the variable when they start."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    for name in ("vllm", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"(vllm|torch|transformers)(\.|$)")


@contextmanager
def engine_output_to(log_path: Path) -> Iterator[Path]:
    """Send everything written to file descriptors 1 and 2 (by vLLM's engine processes,
    torch's C++ warnings, checkpoint-loading bars) to `log_path`, while this process's
    own `sys.stdout` / `sys.stderr` (prints, the progress display) still reach the
    terminal. For the command line: engine processes inherit the descriptors when they
    start, which Python-level redirection cannot reach."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    old = sys.stdout, sys.stderr
    try:
        sys.stdout = io.TextIOWrapper(os.fdopen(os.dup(saved[0]), "wb"), line_buffering=True)
        sys.stderr = io.TextIOWrapper(os.fdopen(os.dup(saved[1]), "wb"), line_buffering=True)
        os.dup2(log, 1)
        os.dup2(log, 2)
        yield log_path
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        new = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = old
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, log):
            os.close(fd)
        for stream in new:
            stream.close()


def _engine_settings(spec: ModelSpec) -> dict[str, Any]:
    options = dict(spec.engine_options)
    if spec.tensor_parallel_size != 1:
        options.setdefault("tensor_parallel_size", spec.tensor_parallel_size)
    return dict(
        dtype=spec.dtype,
        max_model_len=spec.max_model_len,
        kv_cache_memory_bytes=spec.kv_cache,
        gpu_memory_utilization=spec.memory_fraction,
        enforce_eager=spec.enforce_eager,
        data_parallel_size=spec.data_parallel_size,
        engine_options=options or None,
    )


async def start_backends(prepared: Prepared) -> tuple[Policy, Verifier | None]:
    """The policy and (if any run needs it) the verifier: in-process vLLM engines started
    side by side, or connections to vLLM servers (`url`). Whatever started is closed if
    anything fails. The one backend factory: `ttsearch experiment`, `ttsearch run` and
    `ttsearch demo` all start their engines here."""

    recipe = prepared.recipe
    prompts = policy_prompt_options(recipe)
    fmt = prepared.prm_format
    prm = recipe.prm if fmt is not None else None
    mode = cast(ScorerMode, prm.mode if prm is not None else "auto")  # validated by the recipe
    timeout = recipe.execution.request_timeout

    async def connect_policy() -> Policy:  # the HTTP client (httpx) is imported only for servers
        from ttsearch.backends.http.client import HttpOptions
        from ttsearch.backends.http.policy import OpenAIPolicy

        return await OpenAIPolicy.connect(
            list(recipe.policy.url),
            model=prepared.policy_model,
            tokenizer=prepared.policy_tokenizer,
            **prompts,
            options=HttpOptions(timeout=timeout),
        )

    async def connect_verifier() -> Verifier:
        from ttsearch.backends.http.client import HttpOptions
        from ttsearch.backends.http.verifier import OpenAIVerifier

        assert prm is not None and fmt is not None
        return await OpenAIVerifier.connect(
            list(prm.url),
            format=fmt,
            mode=mode,
            model=prepared.prm_model,
            tokenizer=prepared.prm_tokenizer,
            options=HttpOptions(timeout=timeout),
        )

    def start_policy() -> Policy:
        assert prepared.policy_model is not None  # preflight resolves it for in-process engines
        return VLLMPolicy.from_pretrained(
            prepared.policy_model,
            tokenizer=prepared.policy_tokenizer,
            **prompts,
            **_engine_settings(recipe.policy),
        )

    def start_verifier() -> Verifier:
        assert prm is not None and fmt is not None and prepared.prm_model is not None
        return VLLMVerifier.from_pretrained(
            prepared.prm_model,
            format=fmt,
            mode=mode,
            tokenizer=prepared.prm_tokenizer,
            **_engine_settings(prm),
        )

    policy, verifier = await open_backends(
        connect_policy=connect_policy if recipe.policy.url else None,
        start_policy=start_policy,
        connect_verifier=connect_verifier if prm is not None and prm.url else None,
        start_verifier=start_verifier if prm is not None else None,
    )
    return policy, verifier
