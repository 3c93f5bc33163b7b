"""`VLLMPolicy` output mapping, errors, cancellation and lifecycle, on a scripted stand-in
for vLLM's `AsyncLLM` (no engine; needs the vllm package for SamplingParams)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

pytest.importorskip("vllm")

import itertools

from ttsearch.backends.vllm import policy as vp
from ttsearch.backends.vllm.policy import VLLMPolicy, engine_seed
from ttsearch.core.backend import SampleRequest
from ttsearch.errors import BackendError, PromptTooLongError

EOT = 128009


@pytest.fixture(scope="module")
def tokenizer(llama3):
    return llama3


def completion(index, token_ids, text, finish_reason="stop", stop_reason=None):
    return SimpleNamespace(
        index=index,
        token_ids=list(token_ids),
        text=text,
        finish_reason=finish_reason,
        stop_reason=stop_reason,
    )


class FakeEngine:
    """Answers each request with the scripted completions (or raises / hangs)."""

    def __init__(self, tokenizer, *, chunked_prefill=False):
        self.model_config = SimpleNamespace(max_model_len=64, hf_config=SimpleNamespace(eos_token_id=[128001, EOT]))
        self.vllm_config = SimpleNamespace(scheduler_config=SimpleNamespace(enable_chunked_prefill=chunked_prefill))
        self.tokenizer = tokenizer
        self.script: list = []  # completions, or an exception to raise
        self.hang = False
        self.calls: list = []
        self.closed_generators = 0
        self.shutdowns = 0

    async def generate(self, prompt, params, request_id):
        self.calls.append((prompt, params, request_id))
        try:
            if self.hang:
                await asyncio.Event().wait()
            if isinstance(self.script, BaseException):
                raise self.script
            yield SimpleNamespace(finished=True, outputs=list(self.script))
        finally:
            self.closed_generators += 1  # where AsyncLLM.generate aborts the request

    def shutdown(self, timeout=None):
        self.shutdowns += 1


def make_request(**overrides) -> SampleRequest:
    fields = dict(
        prompt_token_ids=(128000, 9906),
        n=1,
        temperature=0.8,
        top_p=1.0,
        max_tokens=8,
        stop=("\n\n",),
        seed=None,
    )
    fields.update(overrides)
    return SampleRequest(**fields)


async def test_finish_reasons(tokenizer):
    engine = FakeEngine(tokenizer)
    hello = tokenizer.encode("Hello", add_special_tokens=False)
    engine.script = [
        completion(1, hello + [271], "Hello\n\n", "stop", "\n\n"),
        completion(0, hello + [EOT], "Hello", "stop", None),
        completion(2, hello + [128001], "Hello", "stop", 128001),
        completion(3, hello * 2, "HelloHello", "length"),
        completion(4, hello + [EOT], "Hello", "length"),  # old vLLM: EOS as the last token
    ]
    policy = VLLMPolicy(engine)
    samples = await policy.sample(make_request(n=5))
    assert [s.finish for s in samples] == ["eos", "step", "eos", "length", "eos"]
    assert samples[1].token_ids == tuple(hello + [271]) and samples[1].text == "Hello\n\n"
    _, params, _ = engine.calls[0]
    assert params.n == 5 and params.stop == ["\n\n"] and params.include_stop_str_in_output
    assert params.max_tokens == 8 and params.seed is None


async def test_aborted_completion_is_a_backend_error(tokenizer):
    engine = FakeEngine(tokenizer)
    engine.script = [completion(0, [9906], "Hello", "abort")]
    with pytest.raises(BackendError, match="unexpected reason 'abort'"):
        await VLLMPolicy(engine).sample(make_request())


@pytest.mark.parametrize("token_text", ["?\n\n\n", "\n\n\n\n", ".\n\n\n"])
async def test_stop_inside_a_token_keeps_ids_and_text_aligned(tokenizer, token_text):
    (overflow,) = tokenizer.encode(token_text, add_special_tokens=False)
    hello = tokenizer.encode("Hello", add_special_tokens=False)
    kept = token_text[: token_text.index("\n\n") + 2]  # vLLM cuts the text after the stop
    engine = FakeEngine(tokenizer)
    engine.script = [completion(0, hello + [overflow], "Hello" + kept, "stop", "\n\n")]
    (sample,) = await VLLMPolicy(engine).sample(make_request())
    assert sample.finish == "step" and sample.text == "Hello" + kept
    assert sample.token_ids[: len(hello)] == tuple(hello)
    assert tokenizer.decode(list(sample.token_ids)) == sample.text


async def test_stop_straddling_two_tokens_keeps_ids_and_text_aligned(tokenizer):
    # "-----\n" then "\n\n": the stop "\n\n" ends after the first "\n" of the last token.
    ids = tokenizer.encode("-----\n", add_special_tokens=False) + [271]
    assert tokenizer.decode(ids) == "-----\n\n\n"
    engine = FakeEngine(tokenizer)
    engine.script = [completion(0, ids, "-----\n\n", "stop", "\n\n")]
    (sample,) = await VLLMPolicy(engine).sample(make_request())
    assert sample.text == "-----\n\n" and tokenizer.decode(list(sample.token_ids)) == sample.text


async def test_request_validation(tokenizer):
    policy = VLLMPolicy(FakeEngine(tokenizer))
    with pytest.raises(ValueError, match="empty prompt"):
        await policy.sample(make_request(prompt_token_ids=()))
    with pytest.raises(ValueError, match="n must be"):
        await policy.sample(make_request(n=0))
    with pytest.raises(ValueError, match="top_p"):
        await policy.sample(make_request(top_p=0.0))
    with pytest.raises(PromptTooLongError, match=r"prompt of 2 tokens \+ max_tokens 63 = 65"):
        await policy.sample(make_request(max_tokens=63))
    assert policy.max_model_len == 64


async def test_engine_failures_become_backend_errors(tokenizer):
    from vllm.v1.engine.exceptions import EngineDeadError

    engine = FakeEngine(tokenizer)
    engine.script = EngineDeadError()
    with pytest.raises(BackendError, match="engine died") as info:
        await VLLMPolicy(engine).sample(make_request())
    assert isinstance(info.value.__cause__, EngineDeadError)
    engine.script = RuntimeError("boom")
    with pytest.raises(BackendError, match="RuntimeError: boom"):
        await VLLMPolicy(engine).sample(make_request())


async def test_cancellation_closes_the_vllm_stream(tokenizer):
    engine = FakeEngine(tokenizer)
    engine.hang = True
    task = asyncio.create_task(VLLMPolicy(engine).sample(make_request()))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert engine.closed_generators == 1


async def test_greedy_n_is_one_decode_copied(tokenizer):
    engine = FakeEngine(tokenizer)
    engine.script = [completion(0, [9906, 271], "Hello\n\n", "stop", "\n\n")]
    samples = await VLLMPolicy(engine).sample(make_request(n=4, temperature=0.0))
    assert len(samples) == 4 and len(set(samples)) == 1
    assert engine.calls[0][1].n == 1


async def test_seeds_are_scrambled_and_refused_where_they_crash_vllm_cpu(tokenizer, monkeypatch):
    engine = FakeEngine(tokenizer)
    engine.script = [completion(0, [9906, 271], "Hello\n\n", "stop", "\n\n")]
    await VLLMPolicy(engine).sample(make_request(seed=5))
    assert engine.calls[0][1].seed == engine_seed(5)
    # vLLM seeds completion i with seed + i: nearby request seeds must not share streams.
    starts = sorted(engine_seed(s) for s in range(1000))
    assert min(b - a for a, b in itertools.pairwise(starts)) > 1024

    monkeypatch.setattr(vp, "_on_cpu", lambda: True)
    crashing = VLLMPolicy(FakeEngine(tokenizer, chunked_prefill=True))
    with pytest.raises(ValueError, match="chunked prefill"):
        await crashing.sample(make_request(seed=5))


async def test_close_shuts_down_only_an_owned_engine(tokenizer):
    borrowed, owned = FakeEngine(tokenizer), FakeEngine(tokenizer)
    async with VLLMPolicy(borrowed) as policy:
        pass
    assert borrowed.shutdowns == 0
    with pytest.raises(BackendError, match="closed"):
        await policy.sample(make_request())
    async with VLLMPolicy(owned, owns_engine=True) as policy:
        pass
    await policy.close()
    assert owned.shutdowns == 1
    owned.shutdown()  # vLLM's __del__ calling it again later is harmless
    assert owned.shutdowns == 1


def test_encode_problem_uses_the_chat_template_once(tokenizer):
    policy = VLLMPolicy(FakeEngine(tokenizer), system_prompt=None)
    ids = policy.encode_problem("1+1?")
    assert ids[0] == 128000 and ids.count(128000) == 1 and ids[-1] == 271


def test_encode_problem_pins_the_template_date(tokenizer):
    from tests.engine.test_chat import LLAMA32_TEMPLATE

    tokenizer.chat_template = LLAMA32_TEMPLATE
    try:
        default = VLLMPolicy(FakeEngine(tokenizer))
        assert default.date_string == "26 Jul 2024"
        assert "Today Date: 26 Jul 2024\n" in tokenizer.decode(default.encode_problem("1+1?"))
        pinned = VLLMPolicy(FakeEngine(tokenizer), date_string="03 Mar 2025")
        assert "Today Date: 03 Mar 2025\n" in tokenizer.decode(pinned.encode_problem("1+1?"))
    finally:
        tokenizer.chat_template = None
