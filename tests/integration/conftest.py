"""Session fixtures for tests against real vLLM engines (CPU is fine).

One tiny random-weight Llama policy is built per test run (real Llama 3 tokenizer, steps
end on "\\n\\n" and solutions on <|eot_id|> at calibrated rates), and ONE `VLLMPolicy`
engine is started for the whole session and shut down at the end; teardown fails if the
engine leaves child processes behind (`no_leftover_processes`, also used by the PRM tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

# Rates for the test policy: steps of ~8 tokens and EOS every ~40 tokens, so short
# max_tokens already give every finish reason.
TEST_P_STEP = 1 / 8
TEST_P_EOS = 1 / 40
TEST_MAX_MODEL_LEN = 1024

# On a GPU the fp32 test engines run vLLM's Triton attention, whose fp32 `tl.dot` defaults
# to TF32 (~1e-3 relative error): more than the 1e-4 the scores are checked to against
# transformers. Full fp32 there (engine processes inherit the variable; no effect on CPU).
os.environ.setdefault("TRITON_F32_DEFAULT", "ieee")


def _children() -> list[Any]:
    """Our child processes, less Python's multiprocessing resource tracker (started by the
    first engine, it lives as long as the interpreter by design)."""
    import psutil

    children = []
    for p in psutil.Process().children(recursive=True):
        try:
            if "resource_tracker" not in " ".join(p.cmdline()) and p.status() != "zombie":
                children.append(p)
        except psutil.NoSuchProcess:
            pass
    return children


@contextlib.asynccontextmanager
async def _reaped(timeout: float) -> AsyncIterator[None]:
    before = {p.pid for p in _children()}
    yield
    # Clean shutdown: the engines' processes are gone (give them a moment to exit).
    deadline = time.monotonic() + timeout
    while (left := [p for p in _children() if p.pid not in before]) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    if left:
        for p in left:
            p.kill()
        pytest.fail(f"vLLM left child processes after close(): {[p.pid for p in left]}")


@pytest.fixture(scope="session")
def no_leftover_processes() -> Callable[[float], contextlib.AbstractAsyncContextManager[None]]:
    """`async with no_leftover_processes(timeout):` around starting and closing engines:
    fails (after killing them) if child processes started inside outlive the block by
    `timeout` s. A block that raises is not checked."""
    return _reaped


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory, llama3_tokenizer_dir: Path) -> Path:
    from tools.tiny_models import build_tiny_llama

    return build_tiny_llama(
        tmp_path_factory.mktemp("tiny-llama"),
        tokenizer_dir=llama3_tokenizer_dir,
        p_step=TEST_P_STEP,
        p_eos=TEST_P_EOS,
        seed=0,
    )


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def vllm_policy(tiny_llama_dir: Path, no_leftover_processes) -> AsyncIterator[object]:
    pytest.importorskip("vllm")
    from ttsearch.backends.vllm.policy import VLLMPolicy

    async with no_leftover_processes(10):
        policy = await asyncio.to_thread(
            VLLMPolicy.from_pretrained,
            tiny_llama_dir,
            dtype="bfloat16",
            max_model_len=TEST_MAX_MODEL_LEN,
            kv_cache_memory_bytes=64 << 20,
            enforce_eager=True,
            seed=0,
        )
        async with policy:
            yield policy
