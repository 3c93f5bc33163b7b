"""Start the shipped toy policy and PRM on vLLM (CPU-sized defaults) and wrap them in a Searcher."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, TypedDict

from ttsearch.backends.prm_formats import MATH_SHEPHERD, PrmFormat
from ttsearch.backends.startup import start_together
from ttsearch.backends.vllm.policy import VLLMPolicy
from ttsearch.backends.vllm.verifier import VLLMVerifier
from ttsearch.core.search import SearchLimits
from ttsearch.core.searcher import Searcher
from ttsearch.toy import TOY_ASSETS_DIR
from ttsearch.toy.tokenizer import MINUS, PLUS, STEP_TAG, TOY_SYSTEM_PROMPT

# The toy PRM reads Math-Shepherd-style input: question, then each step followed by the tag.
TOY_PRM_FORMAT: PrmFormat = replace(MATH_SHEPHERD, step_tag=STEP_TAG, label_tokens=(PLUS, MINUS))

TOY_MAX_MODEL_LEN = 512
TOY_MAX_SOLUTION_TOKENS = 256
# KV-cache block size: prefix-cache hits land on whole blocks, and toy steps are ~10
# tokens, so the CPU default (128) would leave every PRM prefix uncached; 32 is the
# smallest the CPU attention kernel takes.
TOY_BLOCK_SIZE = 32


class _EngineSettings(TypedDict):
    """The `from_pretrained` options both toy engines share."""

    dtype: str
    max_model_len: int
    enforce_eager: bool
    seed: int
    max_num_seqs: int | None
    engine_options: dict[str, Any]


async def start_toy_engines(
    *,
    seed: int = 0,
    assets_dir: Path = TOY_ASSETS_DIR,
    policy_kv_bytes: int = 96 << 20,
    prm_kv_bytes: int = 64 << 20,
    max_num_seqs: int | None = None,
    engine_options: dict[str, Any] | None = None,
) -> tuple[VLLMPolicy, VLLMVerifier]:
    """Start both engines side by side (each ~20 s on a CPU). `assets_dir` holds policy/ and prm/;
    `engine_options` go to both engines' `AsyncEngineArgs`, after the toy's block size."""
    policy_dir, prm_dir = assets_dir / "policy", assets_dir / "prm"
    if not (policy_dir / "config.json").is_file() or not (prm_dir / "config.json").is_file():
        raise FileNotFoundError(
            f"toy models not found under {assets_dir}; build them with `python -m tools.toy_train --out {assets_dir}`"
        )
    common = _EngineSettings(
        dtype="float32",
        max_model_len=TOY_MAX_MODEL_LEN,
        enforce_eager=True,
        seed=seed,
        max_num_seqs=max_num_seqs,
        engine_options={"block_size": TOY_BLOCK_SIZE, **(engine_options or {})},
    )
    policy, verifier = await start_together(
        partial(
            VLLMPolicy.from_pretrained,
            policy_dir,
            system_prompt=TOY_SYSTEM_PROMPT,
            chat_format="tokenizer",
            kv_cache_memory_bytes=policy_kv_bytes,
            **common,
        ),
        partial(
            VLLMVerifier.from_pretrained, prm_dir, format=TOY_PRM_FORMAT, kv_cache_memory_bytes=prm_kv_bytes, **common
        ),
    )
    return policy, verifier


async def start_toy_searcher(
    *, seed: int = 0, assets_dir: Path = TOY_ASSETS_DIR, max_concurrent_problems: int = 128
) -> Searcher:
    policy, verifier = await start_toy_engines(seed=seed, assets_dir=assets_dir)
    return Searcher(
        policy,
        verifier,
        limits=SearchLimits(max_solution_tokens=TOY_MAX_SOLUTION_TOKENS),
        max_concurrent_problems=max_concurrent_problems,
        seed=seed,
        keep_trees=False,
    )
