"""`OpenAIVerifier`: the step-scoring `Verifier` on vLLM servers, over HTTP.

The same two ways to read step scores as in-process (`VLLMVerifier`), the same inputs
(`PrmEncoder`) and the same arithmetic:

- "generative" (LM-head formats): per needed step, one POST /v1/completions of the input
  up to that step's score position, `max_tokens=1`, greedy, with `logprob_token_ids=[good,
  bad]` (and `return_tokens_as_token_ids`, so the answer names tokens by id); score =
  P(good) / (P(good) + P(bad)). Each prompt extends the previous round's, so the server's
  prefix cache makes scoring the newest step cost only that step's tokens.
- "pooling": one POST /pooling (`task="token_classify"`) over the whole input, on a server
  started for STEP pooling (`pooling_server_args` gives the flags); one probability row
  per step-tag token.

A problem (its question) sticks to one PRM server (`ReplicaPool`). Needs httpx and
transformers, not vLLM: `pip install ttsearch[client]`.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from typing import Any

import httpx

from ttsearch.backends.http.client import HttpOptions, MalformedResponseError
from ttsearch.backends.http.replicas import ReplicaPool
from ttsearch.backends.http.served_model import ServedModel, inspect_servers

# The scorer arithmetic is shared with the in-process verifier (no vLLM import there).
from ttsearch.backends.lifecycle import Closeable
from ttsearch.backends.prm_formats import PrmEncoder, PrmFormat, PrmInput
from ttsearch.backends.scoring import (
    PrmScoring,
    ScorerMode,
    clamp_score,
    gather_or_cancel,
    resolve_mode,
    two_way_probability,
)
from ttsearch.core.backend import StepScores
from ttsearch.errors import BackendError

__all__ = ["OpenAIVerifier", "pooling_server_args"]


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


class OpenAIVerifier(PrmScoring, Closeable):
    """The `Verifier` protocol on one or more vLLM servers. Build it with `await
    OpenAIVerifier.connect(urls, format=...)`; `close()` closes the connections.

    `max_in_flight` caps the requests open at once over all concurrent `score` calls (a
    call in "generative" mode sends one request per new step).
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
    ) -> None:
        """Prefer `connect`, which checks the servers and builds `pool` and `served`."""
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
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
        options: HttpOptions | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> OpenAIVerifier:
        """Connect to the PRM servers at `urls` and check them (`inspect_servers`; the
        tokenizer probe includes the format's step tag and labels). Arguments as for
        `OpenAIPolicy.connect`, plus the PRM `format` and `mode` as for `VLLMVerifier`."""
        pool = ReplicaPool("PRM", [urls] if isinstance(urls, str) else urls, options, transport=transport)
        try:
            probe = " ".join((format.anchor, *format.label_tokens))
            served, hf_tokenizer = await inspect_servers(pool, model=model, tokenizer=tokenizer, probe_extra=probe)
            return cls(pool, served, hf_tokenizer, format=format, mode=mode, max_in_flight=max_in_flight)
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

    # -- Verifier protocol -----------------------------------------------------------

    async def score(self, question: str, steps: Sequence[str], *, first: int = 0) -> StepScores:
        """Scores of `steps[first:]` in [0, 1]; `prompt_tokens` counts the tokens sent.

        Raises ValueError for a bad `first`, `PromptTooLongError` when the input does not
        fit `max_model_len` (nothing is sent then), `BackendError` when the servers fail.
        """
        self._check_open()
        inputs = self._encoder.encode_requests(question, steps, first=first)
        if not inputs:
            return StepScores(scores=(), prompt_tokens=0)
        if self._mode == "generative":
            prompts = [list(inp.token_ids[: p + 1]) for inp in inputs for p in inp.score_positions]
            self._check_length(max(len(p) for p in prompts) + 1, len(steps))
            coros = [self._generate_score(question, p) for p in prompts]
        else:
            prompts = [list(inp.token_ids) for inp in inputs]
            self._check_length(max(len(p) for p in prompts), len(steps))
            coros = [self._pooling_scores(question, inp) for inp in inputs]
        results = await gather_or_cancel(coros)
        scores = [s for r in results for s in r]
        expected = len(steps) - first
        if len(scores) != expected:  # an invariant of the encoder
            raise BackendError(f"PRM produced {len(scores)} scores for {expected} steps")
        return StepScores(scores=tuple(scores), prompt_tokens=sum(len(p) for p in prompts))

    async def _close(self) -> None:
        await self._pool.close()  # the servers keep running

    # -- requests --------------------------------------------------------------------

    async def _post(self, question: str, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        async with self._limit:
            return await self._pool.post(question, path, payload)

    async def _generate_score(self, question: str, prompt_ids: list[int]) -> list[float]:
        assert self._encoder.label_ids is not None
        good, bad = self._encoder.label_ids
        payload = {
            "model": self._served.name,
            "prompt": prompt_ids,
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": 2,  # required with logprob_token_ids (which overrides it)
            "logprob_token_ids": [good, bad],
            "return_tokens_as_token_ids": True,
            "stream": False,
        }
        answer = await self._post(question, "/v1/completions", payload)
        try:
            top = answer["choices"][0]["logprobs"]["top_logprobs"][0]
            lp_good, lp_bad = float(top[f"token_id:{good}"]), float(top[f"token_id:{bad}"])
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise MalformedResponseError(
                f"PRM server answered no log probabilities for the label tokens {good}, {bad} (does this "
                f"vLLM support logprob_token_ids? else use mode='pooling'): {str(answer)[:300]}"
            ) from e
        return [two_way_probability(lp_good, lp_bad, "over HTTP")]

    async def _pooling_scores(self, question: str, inp: PrmInput) -> list[float]:
        payload = {
            "model": self._served.name,
            "input": list(inp.token_ids),
            "task": "token_classify",
            "add_special_tokens": False,
        }
        answer = await self._post(question, "/pooling", payload)
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
