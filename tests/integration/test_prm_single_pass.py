"""Single-pass, prefix-cache-reading PRM scoring on a real vLLM engine (the toy PRM).

One ALL-pooling engine (block size 32), checked against transformers: a candidate's
steps cost ONE request; a child step reads its parent's full blocks from the prefix
cache and computes only the rest; siblings sent together compute their shared prefix
once (the `PrefixGate`); an input already scored costs nothing; `reuse_prefix=False`
recomputes everything (the lockstep baseline's cost).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

BLOCK = 32
QUESTION = "Compute 7 - 5 + 6 - 3 + 2 + 1 - 4 + 3 - 2 + 5 - 1."
STEPS = [
    "## Step 1: 7 - 5 = 2",
    "## Step 2: 2 + 6 = 8",
    "## Step 3: 8 - 3 = 5",
    "## Step 4: 5 + 2 = 7",
    "## Step 5: 7 + 1 = 8",
]
CHILDREN = ["## Step 6: 8 - 4 = 4", "## Step 6: 8 - 4 = 3", "## Step 6: 8 - 4 = 5", "## Step 6: 8 + 4 = 9"]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def prm(no_leftover_processes) -> AsyncIterator[Any]:
    pytest.importorskip("vllm.v1.engine.async_llm")
    from ttsearch.backends.vllm.verifier import VLLMVerifier
    from ttsearch.toy import TOY_ASSETS_DIR
    from ttsearch.toy.backends import TOY_PRM_FORMAT

    key = "VLLM_ENABLE_V1_MULTIPROCESSING"
    saved = os.environ.get(key)
    os.environ[key] = "0"  # worker in the engine process: starts twice as fast on CPU
    try:
        async with no_leftover_processes(15):
            verifier = await asyncio.to_thread(
                VLLMVerifier.from_pretrained,
                TOY_ASSETS_DIR / "prm",
                format=TOY_PRM_FORMAT,
                dtype="float32",
                max_model_len=512,
                enforce_eager=True,
                kv_cache_memory_bytes=32 << 20,
                engine_options={"block_size": BLOCK},
            )
            yield verifier
            await verifier.close()
    finally:
        if saved is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = saved


@pytest.fixture(scope="module")
def reference(prm: Any):
    """Scores from transformers: softmax over the ("+", "-") logits at each step tag."""
    import torch
    from transformers import LlamaForCausalLM

    from ttsearch.toy import TOY_ASSETS_DIR

    model = LlamaForCausalLM.from_pretrained(str(TOY_ASSETS_DIR / "prm"), dtype=torch.float32).eval()
    good, bad = prm.encoder.label_ids

    def scores(steps: list[str]) -> list[float]:
        inp = prm.encoder.encode(QUESTION, steps)
        with torch.no_grad():
            logits = model(torch.tensor([list(inp.token_ids)])).logits[0]
        return [logits[p, [good, bad]].softmax(-1)[0].item() for p in inp.score_positions]

    return scores


def _length(prm: Any, steps: list[str]) -> int:
    return len(prm.encoder.encode(QUESTION, steps).token_ids)


async def _reset(prm: Any) -> None:
    await prm.engine.reset_prefix_cache()


def _fresh(prm: Any, **kwargs: Any) -> Any:
    """A new wrapper on the module's engine: an empty memo and gate."""
    from ttsearch.backends.vllm.verifier import VLLMVerifier

    return VLLMVerifier(prm.engine, prm.tokenizer, format=prm.format, **kwargs)


async def test_all_steps_of_a_candidate_in_one_request(prm, reference):
    await _reset(prm)
    verifier = _fresh(prm)
    assert verifier.mode == "pooling" and verifier.reads_prefix_cache
    result = await verifier.score(QUESTION, STEPS)
    assert result.requests == 1
    assert result.prompt_tokens == _length(prm, STEPS) and result.cached_tokens == 0
    assert result.scores == pytest.approx(reference(STEPS), abs=1e-4)


async def test_a_child_computes_its_new_tokens_and_the_parents_last_partial_block(prm, reference):
    await _reset(prm)
    verifier = _fresh(prm)
    await verifier.score(QUESTION, STEPS)
    child = [*STEPS, CHILDREN[0]]
    result = await verifier.score(QUESTION, child, first=len(STEPS))
    parent_len, child_len = _length(prm, STEPS), _length(prm, child)
    assert result.requests == 1 and result.prompt_tokens == child_len
    assert result.cached_tokens == (parent_len // BLOCK) * BLOCK > 0
    assert result.prompt_tokens - result.cached_tokens < child_len - parent_len + BLOCK
    assert result.scores == pytest.approx(reference(child)[-1:], abs=1e-4)


async def test_siblings_sent_together_compute_the_shared_prefix_once(prm, reference):
    await _reset(prm)
    verifier = _fresh(prm)
    children = [[*STEPS, c] for c in CHILDREN]
    results = await asyncio.gather(*(verifier.score(QUESTION, c) for c in children))
    shared = (_length(prm, STEPS) // BLOCK) * BLOCK  # full blocks of the common prefix
    assert [r.requests for r in results] == [1, 1, 1, 1]
    assert sum(r.cached_tokens for r in results) == 3 * shared  # all but the first read it
    assert verifier.prefix_gate.waits >= 3
    for steps, r in zip(children, results):
        assert r.scores == pytest.approx(reference(steps), abs=1e-4)


async def test_scores_inside_a_cache_hit_come_from_the_memo(prm, reference):
    await _reset(prm)
    verifier = _fresh(prm)
    await verifier.score(QUESTION, [*STEPS, CHILDREN[0]])
    # Best-of-N: another candidate sharing the first five steps, all steps scored. Its first
    # steps lie in cached blocks (no pooled rows come back for them): read from the memo.
    other = [*STEPS, CHILDREN[1]]
    result = await verifier.score(QUESTION, other)
    assert result.requests == 1 and result.cached_tokens > 0
    assert result.scores == pytest.approx(reference(other), abs=1e-4)
    again = await verifier.score(QUESTION, other)  # the same input: nothing sent
    # Nothing computed, but the input counts (as cached), so a run's PRM tokens do not
    # depend on what other runs through the same verifier scored before it.
    assert again.requests == 0 and again.scores == result.scores
    assert again.prompt_tokens == result.prompt_tokens and again.cached_tokens == again.prompt_tokens


async def test_without_prefix_reuse_every_request_recomputes_its_input(prm, reference):
    await _reset(prm)
    warm = _fresh(prm)
    await warm.score(QUESTION, STEPS)
    baseline = _fresh(prm, reuse_prefix=False)
    assert not baseline.reads_prefix_cache
    child = [*STEPS, CHILDREN[2]]
    result = await baseline.score(QUESTION, child)
    assert result.requests == 1 and result.cached_tokens == 0 and result.prompt_tokens == _length(prm, child)
    assert result.scores == pytest.approx(reference(child), abs=1e-4)


async def test_forget_caches_makes_the_next_search_compute_what_it_reads(prm, reference):
    # What the experiment runner calls between runs (execution.isolate_runs): an input
    # scored by an earlier run is computed again, not read from the memo or prefix cache.
    await _reset(prm)
    verifier = _fresh(prm)
    first = await verifier.score(QUESTION, STEPS)
    remembered = await verifier.score(QUESTION, STEPS)
    assert remembered.requests == 0 and remembered.cached_tokens == remembered.prompt_tokens
    await verifier.forget_caches()
    again = await verifier.score(QUESTION, STEPS)
    assert again.requests == 1 and again.cached_tokens == 0
    assert again.prompt_tokens == first.prompt_tokens and again.scores == pytest.approx(first.scores, abs=1e-5)
