"""`OpenAIVerifier`: the step-scoring `Verifier` on vLLM servers, over HTTP.

The same two ways to read step scores as in-process (`VLLMVerifier`), the same inputs
(`PrmEncoder`), the same arithmetic and the same accounting:

- "generative" (LM-head formats; "auto" for them): per needed step, one POST
  /v1/completions of the input up to that step's score position, `max_tokens=1`,
  greedy, with `logprob_token_ids=[good, bad]` (and `return_tokens_as_token_ids`, so the
  answer names tokens by id); score = P(good) / (P(good) + P(bad)). Each prompt extends
  the previous one, so the server's prefix cache makes a request cost only its new
  tokens, *if* the request that computed the prefix has finished: requests go through a
  `PrefixGate` (`ttsearch.backends.prm_cache`, as in-process), so a candidate's steps are
  sent one after another and 16 siblings' first steps wait for the one computing their
  question. The gate works in blocks of the servers' KV-cache block size (`block_size`:
  `vllm serve --block-size`; vLLM's default is 16 on GPU, 128 on CPU). A `ScoreMemo`
  answers a prompt scored before without a request.
- "pooling": one POST /pooling (`task="token_classify"`) over the whole input, on a server
  started for STEP pooling (`pooling_server_args` gives the flags); one probability row
  per step-tag token. vLLM's /pooling cannot read the prefix cache for token
  classification (`skip_reading_prefix_cache` is not an API field in 0.32), so each call
  computes its whole input; the memo spares inputs whose scores are all known.

`StepScores` reports `prompt_tokens` (sent), `cached_tokens` (of those, read from the
server's prefix cache, from the answer's `usage.prompt_tokens_details.cached_tokens`,
which vLLM sends when started with `--enable-prompt-tokens-details`; memo hits count as
cached) and `requests`.

A problem (its question) sticks to one PRM server (`ReplicaPool`). Needs httpx and
transformers, not vLLM: `pip install ttsearch[client]`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Sequence
from typing import Any, Literal

import httpx

from ttsearch.backends.http.client import HttpOptions, MalformedResponseError
from ttsearch.backends.http.replicas import ReplicaPool
from ttsearch.backends.http.served_model import ServedModel, inspect_servers

# The scorer arithmetic is shared with the in-process verifier (no vLLM import there).
from ttsearch.backends.lifecycle import Closeable
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
from ttsearch.core.backend import StepScores
from ttsearch.errors import BackendError

__all__ = ["DEFAULT_BLOCK_SIZE", "OpenAIVerifier", "pooling_server_args"]

logger = logging.getLogger(__name__)

# vLLM's KV-cache block size on GPU unless `vllm serve --block-size` says otherwise.
DEFAULT_BLOCK_SIZE = 16


def pooling_server_args(fmt: PrmFormat, tokenizer: Any) -> list[str]:
    """The `vllm serve` flags a pooling PRM server needs for `fmt` (what
    `engine_options_for(fmt, "pooling", tokenizer)` sets in-process). The server's
    /pooling endpoint serves only its configured task, hence `"task": "token_classify"`
    in --pooler-config (vLLM 0.32; leave it out where PoolerConfig has no `task`)."""
    encoder = PrmEncoder(fmt, tokenizer)
    pooler = {"task": "token_classify", "pooling_type": "STEP", "step_tag_id": encoder.anchor_id}
    if fmt.head == "lm":
        overrides = {"classifier_from_token": encoder.label_token_strings, "method": "no_post_processing"}
        return [
            "--runner", "pooling", "--convert", "classify",
            "--hf-overrides", json.dumps(overrides), "--pooler-config", json.dumps(pooler),
        ]  # fmt: skip
    return [
        "--runner",
        "pooling",
        "--pooler-config",
        json.dumps({"task": "token_classify", "step_tag_id": encoder.anchor_id}),
    ]


def _agreed_block_size(sizes: Sequence[int | None], urls: Sequence[str]) -> int:
    """The one block size the servers publish (the request ordering works in its blocks)."""
    known = {url: size for url, size in zip(urls, sizes) if size is not None}
    if len(set(known.values())) > 1:
        listed = ", ".join(f"{url}: {size}" for url, size in known.items())
        raise ValueError(f"the PRM servers use different KV-cache block sizes ({listed}); start them alike")
    if not known:
        logger.warning(
            "the PRM servers' /metrics do not say their KV-cache block size; assuming %d "
            "(pass block_size= the servers' --block-size)",
            DEFAULT_BLOCK_SIZE,
        )
        return DEFAULT_BLOCK_SIZE
    return next(iter(known.values()))


class OpenAIVerifier(PrmScoring, Closeable):
    """The `Verifier` protocol on one or more vLLM servers. Build it with `await
    OpenAIVerifier.connect(urls, format=...)`; `close()` closes the connections.

    `max_in_flight` caps the requests open at once over all concurrent `score` calls (a
    call in "generative" mode sends one request per new step). `block_size`: the servers'
    KV-cache block size, which the request ordering works in (None: no ordering, every
    request is sent at once; for servers without prefix caching).
    """

    def __init__(
        self,
        pool: ReplicaPool,
        served: ServedModel,
        tokenizer: Any,
        *,
        format: PrmFormat,
        mode: ScorerMode = "auto",
        max_in_flight: int = 64,
        block_size: int | None = DEFAULT_BLOCK_SIZE,
    ) -> None:
        """Prefer `connect`, which checks the servers and builds `pool` and `served`."""
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        if block_size is not None and block_size < 1:
            raise ValueError(f"block_size must be >= 1 or None, got {block_size}")
        self._pool = pool
        self._served = served
        self._tokenizer = tokenizer
        self._format = format
        # "auto" stays generative here for LM-head formats: a server's /pooling endpoint
        # is started with STEP pooling (pooling_server_args), which cannot read the prefix
        # cache, while 1-token completions can (in-process engines use ALL pooling instead).
        if mode == "auto" and format.head == "lm":
            mode = "generative"
        self._mode = resolve_mode(format, mode)
        self._encoder = PrmEncoder(format, tokenizer)
        self._limit = asyncio.Semaphore(max_in_flight)
        # pooling: LM-head conversion has classifier_from_token = [good, bad], so label 0 is "good".
        self._label_index = 0 if format.head == "lm" else format.positive_label
        # Ordering only pays where requests read the cache: generative ones (see the module).
        self._gate = PrefixGate(block_size) if block_size is not None and self._mode == "generative" else None
        self._memo = ScoreMemo()
        self._warned_no_cache_report = False

    @classmethod
    async def connect(
        cls,
        urls: str | Sequence[str],
        *,
        format: PrmFormat,
        mode: ScorerMode = "auto",
        model: str | os.PathLike[str] | None = None,
        tokenizer: Any = None,
        max_in_flight: int = 64,
        block_size: int | Literal["auto"] | None = "auto",
        options: HttpOptions | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> OpenAIVerifier:
        """Connect to the PRM servers at `urls` and check them (`inspect_servers`; the
        tokenizer probe includes the format's step tag and labels). Arguments as for
        `OpenAIPolicy.connect`, plus the PRM `format` and `mode` as for `VLLMVerifier`, and
        the servers' KV-cache `block_size` (see the class; "auto": read from the servers'
        /metrics, as `vllm serve` publishes it, else DEFAULT_BLOCK_SIZE with a warning)."""
        pool = ReplicaPool("PRM", [urls] if isinstance(urls, str) else urls, options, transport=transport)
        try:
            probe = " ".join((format.anchor, *format.label_tokens))
            served, hf_tokenizer = await inspect_servers(pool, model=model, tokenizer=tokenizer, probe_extra=probe)
            if block_size == "auto":
                block_size = _agreed_block_size(await pool.block_sizes(), pool.urls)
            return cls(
                pool,
                served,
                hf_tokenizer,
                format=format,
                mode=mode,
                max_in_flight=max_in_flight,
                block_size=block_size,
            )
        except BaseException:
            await pool.close()
            raise

    # -- properties ------------------------------------------------------------------

    @property
    def max_model_len(self) -> int:
        return self._served.max_model_len

    @property
    def pool(self) -> ReplicaPool:
        return self._pool

    @property
    def prefix_gate(self) -> PrefixGate | None:
        """The request ordering (None in pooling mode, or with `block_size=None`)."""
        return self._gate

    # -- Verifier protocol -----------------------------------------------------------

    async def score(self, question: str, steps: Sequence[str], *, first: int = 0) -> StepScores:
        """Scores of `steps[first:]` in [0, 1]; `prompt_tokens` counts the tokens sent,
        `cached_tokens` those of them the server read from its prefix cache, `requests`
        the requests sent.

        Raises ValueError for a bad `first`, `PromptTooLongError` when the input does not
        fit `max_model_len` (nothing is sent then), `BackendError` when the servers fail.
        """
        self._check_open()
        inputs = self._encoder.encode_requests(question, steps, first=first)
        if not inputs:
            return StepScores(scores=(), prompt_tokens=0)
        if self._mode == "generative":
            self._check_length(max(inp.score_positions[-1] + 1 for inp in inputs) + 1, len(steps))
            coros = [self._generative_scores(question, inp) for inp in inputs]
        else:
            self._check_length(max(len(inp.token_ids) for inp in inputs), len(steps))
            coros = [self._pooling_scores(question, inp) for inp in inputs]
        results = await gather_or_cancel(coros)
        scores = [s for part, _ in results for s in part]
        expected = len(steps) - first
        if len(scores) != expected:  # an invariant of the encoder
            raise BackendError(f"PRM produced {len(scores)} scores for {expected} steps")
        cost = sum((c for _, c in results), ScoringCost())
        return StepScores(
            scores=tuple(scores),
            prompt_tokens=cost.prompt_tokens,
            cached_tokens=cost.cached_tokens,
            requests=cost.requests,
        )

    async def _close(self) -> None:
        await self._pool.close()  # the servers keep running

    # -- requests --------------------------------------------------------------------

    async def _post(self, question: str, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        async with self._limit:
            return await self._pool.post(question, path, payload)

    def _held(self, token_ids: list[int]) -> contextlib.AbstractAsyncContextManager[None]:
        if self._gate is None:
            return contextlib.nullcontext()
        return self._gate.hold(token_ids)

    async def _generative_scores(self, question: str, inp: PrmInput) -> tuple[list[float], ScoringCost]:
        """One 1-token request per score position; the gate sends them one after another,
        so each reads the blocks of the one before from the server's cache."""
        ids = list(inp.token_ids)
        results = await gather_or_cancel([self._generate_score(question, ids, p) for p in inp.score_positions])
        return [score for score, _ in results], sum((c for _, c in results), ScoringCost())

    async def _generate_score(self, question: str, ids: list[int], position: int) -> tuple[float, ScoringCost]:
        prompt_ids = ids[: position + 1]
        async with self._held(prompt_ids):
            # Under the gate: a request for this very prompt that was in flight has finished,
            # so its score is in the memo.
            (known,) = self._memo.lookup(ids, [position])
            if known is not None:
                return known, ScoringCost.memo_hit(len(prompt_ids))
            answer = await self._post(question, "/v1/completions", self._label_request(prompt_ids))
            score = self._label_score(answer)
            self._memo.record(ids, {position: score})
        return score, ScoringCost(len(prompt_ids), self._cached_tokens(answer, len(prompt_ids)), 1)

    def _label_request(self, prompt_ids: list[int]) -> dict[str, Any]:
        assert self._encoder.label_ids is not None
        return {
            "model": self._served.name,
            "prompt": prompt_ids,
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": 2,  # required with logprob_token_ids (which overrides it)
            "logprob_token_ids": list(self._encoder.label_ids),
            "return_tokens_as_token_ids": True,
            "stream": False,
        }

    def _label_score(self, answer: dict[str, Any]) -> float:
        assert self._encoder.label_ids is not None
        good, bad = self._encoder.label_ids
        try:
            top = answer["choices"][0]["logprobs"]["top_logprobs"][0]
            lp_good, lp_bad = float(top[f"token_id:{good}"]), float(top[f"token_id:{bad}"])
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise MalformedResponseError(
                f"PRM server answered no log probabilities for the label tokens {good}, {bad} (does this "
                f"vLLM support logprob_token_ids? else use mode='pooling'): {str(answer)[:300]}"
            ) from e
        return two_way_probability(lp_good, lp_bad, "over HTTP")

    def _cached_tokens(self, answer: dict[str, Any], sent: int) -> int:
        """Prompt tokens the server read from its prefix cache (`_reported_cached_tokens`);
        0, with a warning once, where the server does not say."""
        cached = _reported_cached_tokens(answer, sent)
        if cached is not None:
            return cached
        if not self._warned_no_cache_report:
            self._warned_no_cache_report = True
            logger.warning(
                "the PRM server reports no cached prompt tokens (start vllm serve with "
                "--enable-prompt-tokens-details): every PRM token sent counts as computed"
            )
        return 0

    async def _pooling_scores(self, question: str, inp: PrmInput) -> tuple[list[float], ScoringCost]:
        """The scores of one input from one /pooling request (none where the memo knows them)."""
        ids = list(inp.token_ids)
        known = self._memo.lookup(ids, inp.score_positions)
        if all(k is not None for k in known):
            return [float(k) for k in known], ScoringCost.memo_hit(len(ids))  # type: ignore[arg-type]
        payload = {"model": self._served.name, "input": ids, "task": "token_classify", "add_special_tokens": False}
        answer = await self._post(question, "/pooling", payload)
        scores = self._pooled_row_scores(inp, answer)
        self._memo.record(ids, dict(zip(inp.score_positions, scores)))
        # vLLM's token classification never reads the prefix cache; count what it says anyway.
        return scores, ScoringCost(len(ids), _reported_cached_tokens(answer, len(ids)) or 0, 1)

    def _pooled_row_scores(self, inp: PrmInput, answer: dict[str, Any]) -> list[float]:
        try:
            rows = answer["data"][0]["data"]
        except (KeyError, IndexError, TypeError) as e:
            raise MalformedResponseError(f"PRM server /pooling answered no data: {str(answer)[:300]}") from e
        tags = [i for i, t in enumerate(inp.token_ids) if t == self._encoder.anchor_id]
        if isinstance(rows, list) and len(rows) == len(tags):
            row_of = {p: r for r, p in enumerate(tags)}  # STEP pooling with step_tag_id
        elif isinstance(rows, list) and len(rows) == len(inp.token_ids):
            row_of = {p: p for p in range(len(inp.token_ids))}  # a row per token
        else:
            got = len(rows) if isinstance(rows, list) else type(rows).__name__
            raise MalformedResponseError(
                f"PRM server /pooling answered {got} rows for {len(tags)} step tags in {len(inp.token_ids)} "
                "tokens (start it with the flags of pooling_server_args(format, tokenizer))"
            )
        scores = []
        for p in inp.score_positions:
            row = rows[row_of[p]]
            if (
                not isinstance(row, list)
                or len(row) <= self._label_index
                or not isinstance(row[self._label_index], (int, float))
            ):
                raise MalformedResponseError(f"PRM server pooled row {row!r:.100} has no label {self._label_index}")
            scores.append(clamp_score(float(row[self._label_index]), "over HTTP"))
        return scores


def _reported_cached_tokens(answer: dict[str, Any], sent: int) -> int | None:
    """`usage.prompt_tokens_details.cached_tokens` of a vLLM answer (None: not reported;
    vLLM reports it when started with --enable-prompt-tokens-details)."""
    usage = answer.get("usage")
    details = usage.get("prompt_tokens_details") if isinstance(usage, dict) else None
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    if isinstance(cached, int) and not isinstance(cached, bool) and cached >= 0:
        return min(cached, sent)
    return None
