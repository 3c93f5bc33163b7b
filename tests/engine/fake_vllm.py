"""A stand-in for vLLM OpenAI-compatible servers, for the HTTP backends' unit tests.

`FakeCluster` answers every server URL it knows through one `httpx.MockTransport`:
GET /health, /v1/models, POST /tokenize, /v1/completions (policy text, or PRM label log
probabilities) and /pooling, with the response shapes of vLLM 0.32's protocol classes.
Tests script failures per server (`fail_with`, `hang`) and read what was sent (`requests`).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class FakeServer:
    url: str
    tokenizer: Any
    model: str = "toy-policy"
    root: str | None = "/models/toy-policy"
    max_model_len: int = 512
    # payload -> list of choice dicts (policy completions)
    complete: Callable[[dict[str, Any]], list[dict[str, Any]]] | None = None
    prm_probability: Callable[[list[int]], float] = lambda ids: 0.5  # P(good) for a prompt
    pooled_rows: Callable[[list[int]], Any] | None = None
    fail_with: Callable[[httpx.Request], httpx.Response | None] | None = None  # a canned failure, or None
    dead: bool = False  # connections refused
    tokenize_missing: bool = False
    block_size: int | None = None  # published in /metrics as vLLM does (None: no /metrics)
    requests: list[tuple[str, dict[str, Any] | None]] = field(default_factory=list)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if self.dead:
            raise httpx.ConnectError("connection refused", request=request)
        payload = json.loads(request.content) if request.content else None
        self.requests.append((request.url.path, payload))
        if self.fail_with is not None and (canned := self.fail_with(request)) is not None:
            return canned
        path = request.url.path
        if path == "/health":  # vLLM: 200 while its engine runs
            return httpx.Response(200)
        if path == "/metrics" and self.block_size is not None:  # vLLM publishes its cache config
            labels = f'block_size="{self.block_size}",cache_dtype="auto",enable_prefix_caching="True"'
            return httpx.Response(
                200, text=f"# TYPE vllm:cache_config_info gauge\nvllm:cache_config_info{{{labels}}} 1.0\n"
            )
        if path == "/v1/models":
            card = {"id": self.model, "object": "model", "root": self.root, "max_model_len": self.max_model_len}
            return httpx.Response(200, json={"object": "list", "data": [card]})
        if path == "/tokenize":
            if self.tokenize_missing:
                return httpx.Response(404, json={"detail": "Not Found"})
            tokens = self.tokenizer.encode(payload["prompt"], add_special_tokens=payload["add_special_tokens"])
            return httpx.Response(
                200, json={"count": len(tokens), "max_model_len": self.max_model_len, "tokens": tokens}
            )
        if path == "/v1/completions":
            if "logprob_token_ids" in payload:
                return httpx.Response(200, json=self._label_logprobs(payload))
            assert self.complete is not None, "no policy completions scripted"
            choices = self.complete(payload)
            return httpx.Response(200, json=_completion_response(self.model, choices))
        if path == "/pooling":
            assert self.pooled_rows is not None, "no pooled rows scripted"
            rows = self.pooled_rows(payload["input"])
            return httpx.Response(
                200, json={"model": self.model, "data": [{"index": 0, "object": "pooling", "data": rows}]}
            )
        return httpx.Response(404, json={"detail": "Not Found"})

    def _label_logprobs(self, payload: dict[str, Any]) -> dict[str, Any]:
        good, bad = payload["logprob_token_ids"]
        p = self.prm_probability(payload["prompt"])
        top = {f"token_id:{good}": math.log(p), f"token_id:{bad}": math.log(1 - p)}
        choice = {
            "index": 0,
            "text": "",
            "finish_reason": "length",
            "stop_reason": None,
            "logprobs": {
                "text_offset": [0],
                "token_logprobs": [math.log(p)],
                "tokens": [f"token_id:{good}"],
                "top_logprobs": [top],
            },
        }
        return _completion_response(self.model, [choice])


def _completion_response(model: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": "cmpl-test",
        "object": "text_completion",
        "created": 0,
        "model": model,
        "choices": choices,
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def choice(
    index: int, tokenizer: Any, text: str, finish: str = "stop", stop_reason: Any = "\n\n", ids: list[int] | None = None
) -> dict[str, Any]:
    """A /v1/completions choice as vLLM writes it with return_token_ids."""
    return {
        "index": index,
        "text": text,
        "logprobs": None,
        "finish_reason": finish,
        "stop_reason": stop_reason,
        "token_ids": ids if ids is not None else tokenizer.encode(text, add_special_tokens=False),
        "prompt_token_ids": None,
    }


class FakeCluster:
    """Several `FakeServer`s behind one transport, by URL."""

    def __init__(self, servers: list[FakeServer]) -> None:
        self.servers = {s.url: s for s in servers}
        self.transport = httpx.MockTransport(self._handle)

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        base = f"{request.url.scheme}://{request.url.host}:{request.url.port}"
        await asyncio.sleep(0)  # let other requests interleave, as over a network
        return await self.servers[base].handle(request)

    def __getitem__(self, url: str) -> FakeServer:
        return self.servers[url]
