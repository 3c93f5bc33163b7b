"""JSON over HTTP to one vLLM OpenAI-compatible server, with timeouts and retries.

`post_json` / `get_json` send one request on a pooled `httpx.AsyncClient` and return the
decoded JSON object. Transient failures (connection errors, HTTP 5xx, 408 and 429) are
retried on the same server with exponential backoff; when the retries run out, or the
server takes longer than the timeout, `ReplicaUnavailable` is raised. That says the
request failed, not yet whose fault it is: the caller (`ReplicaPool`) asks the server's
health (`check_health`, GET /health) and blames the server only if that fails too. Any
other 4xx answer is the request's fault, never the server's: it raises
`ServerRequestError` with the server's message (never retried). A body that is not a
JSON object raises `MalformedResponseError`.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from ttsearch.errors import BackendError, RequestFailedError

__all__ = [
    "HttpOptions",
    "MalformedResponseError",
    "ReplicaUnavailable",
    "ServerRequestError",
    "RequestFailedError",
    "check_health",
    "get_json",
    "make_client",
    "post_json",
]


@dataclass(frozen=True, slots=True)
class HttpOptions:
    """How the client talks to the servers."""

    timeout: float = 600.0  # seconds one request may take before its server counts as down
    connect_timeout: float = 10.0  # seconds to open a connection
    retries: int = 3  # retries on one server (connection errors, 5xx) before it counts as down
    backoff: float = 0.5  # seconds before the first retry; doubles each retry
    max_connections: int = 512  # pooled connections per server
    api_key: str | None = None  # sent as "Authorization: Bearer ..." (vllm serve --api-key)
    health_timeout: float = 10.0  # seconds a health check may take (at most `timeout`)
    recheck_backoff: float = 1.0  # seconds before a down server's first re-check; doubles each failed one
    recheck_max: float = 60.0  # longest wait between two re-checks of a down server

    def __post_init__(self) -> None:
        if self.timeout <= 0 or self.connect_timeout <= 0 or self.health_timeout <= 0:
            raise ValueError(f"timeouts must be > 0, got {self.timeout}, {self.connect_timeout}, {self.health_timeout}")
        if not 0 < self.recheck_backoff <= self.recheck_max:
            raise ValueError(
                f"recheck_backoff must be > 0 and <= recheck_max, got {self.recheck_backoff}, {self.recheck_max}"
            )
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if self.backoff < 0:
            raise ValueError(f"backoff must be >= 0, got {self.backoff}")
        if self.max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {self.max_connections}")


class ReplicaUnavailable(BackendError):
    """A request got no answer (connection refused or lost, timeout, 5xx after retries):
    the server is down, or the request failed it; its health check tells which."""


class ServerRequestError(RequestFailedError):
    """A server rejected a request (HTTP 4xx other than 408, 429); the message is the server's."""

    def __init__(self, message: str, *, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class MalformedResponseError(BackendError):
    """A server answered with something that is not the expected JSON."""


def make_client(
    base_url: str, options: HttpOptions, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """A pooled client for one server (`transport`: a test double, e.g. `httpx.MockTransport`)."""
    limits = httpx.Limits(max_connections=options.max_connections, max_keepalive_connections=options.max_connections)
    timeout = httpx.Timeout(options.timeout, connect=options.connect_timeout)
    headers = {"Authorization": f"Bearer {options.api_key}"} if options.api_key else None
    return httpx.AsyncClient(
        base_url=base_url.rstrip("/"), limits=limits, timeout=timeout, headers=headers, transport=transport
    )


async def post_json(
    client: httpx.AsyncClient,
    path: str,
    payload: dict[str, Any],
    options: HttpOptions,
    *,
    give_up: Callable[[], bool] = lambda: False,
) -> dict[str, Any]:
    """POST `payload` to `path`; the answer's JSON object. Raises as the module docstring
    says. `give_up()` is asked before each retry (True: the server is known to be down,
    fail now)."""
    return await _request(client, "POST", path, payload, options, give_up)


async def get_json(client: httpx.AsyncClient, path: str, options: HttpOptions) -> dict[str, Any]:
    """GET `path`; the answer's JSON object."""
    return await _request(client, "GET", path, None, options, lambda: False)


# vLLM's /metrics (Prometheus text) carries the engine's cache config as labels.
_BLOCK_SIZE_LABEL = re.compile(r'^vllm:cache_config_info\{[^}]*\bblock_size="(\d+)"', re.MULTILINE)


async def served_block_size(client: httpx.AsyncClient, options: HttpOptions) -> int | None:
    """The server's KV-cache block size, read from `GET /metrics` (`vllm:cache_config_info`);
    None when the server does not publish it (metrics off, or not vLLM)."""
    timeout = httpx.Timeout(min(options.health_timeout, options.timeout), connect=options.connect_timeout)
    try:
        response = await client.get("/metrics", timeout=timeout)
    except httpx.TransportError:
        return None
    if response.status_code != 200:
        return None
    match = _BLOCK_SIZE_LABEL.search(response.text)
    return int(match.group(1)) if match else None


async def check_health(client: httpx.AsyncClient, options: HttpOptions) -> str | None:
    """Why the server is unhealthy, or None when GET /health answers 200 within
    `health_timeout` (vLLM answers 200 while its engine runs, 503 once it died)."""
    timeout = min(options.health_timeout, options.timeout)
    try:
        response = await client.get("/health", timeout=httpx.Timeout(timeout, connect=options.connect_timeout))
    except httpx.TimeoutException as e:
        return f"GET /health: no answer within {timeout} s ({type(e).__name__})"
    except httpx.TransportError as e:
        return f"GET /health: {type(e).__name__}: {str(e) or 'connection failed'}"
    if response.status_code != 200:
        return f"GET /health answered HTTP {response.status_code}"
    return None


# Answers that say "not now" rather than "not this request": retried, like 5xx.
_TRANSIENT_4XX = frozenset({408, 429})


async def _request(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    payload: dict[str, Any] | None,
    options: HttpOptions,
    give_up: Callable[[], bool],
) -> dict[str, Any]:
    where = f"{client.base_url}{path}"
    for attempt in range(options.retries + 1):
        last = attempt == options.retries or give_up()
        try:
            response = await client.request(method, path, json=payload)
        except httpx.TimeoutException as e:
            # A timed-out request may still run on the server; another try there would
            # queue behind it. Give up on this server at once.
            raise ReplicaUnavailable(
                f"{where}: no answer within {_timeout_of(e, options)} s ({type(e).__name__})"
            ) from e
        except httpx.TransportError as e:
            if last:
                raise ReplicaUnavailable(f"{where}: {type(e).__name__}: {str(e) or 'connection failed'}") from e
        else:
            if response.status_code >= 500 or response.status_code in _TRANSIENT_4XX:
                if last:
                    raise ReplicaUnavailable(
                        f"{where}: HTTP {response.status_code} after {attempt + 1} tries: {_error_message(response)}"
                    )
            elif response.status_code >= 400:
                raise ServerRequestError(
                    f"{where} rejected the request (HTTP {response.status_code}; the request is at fault, "
                    f"not the server): {_error_message(response)}",
                    status_code=response.status_code,
                )
            else:
                return _json_object(response, where)
        await asyncio.sleep(options.backoff * 2**attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def _timeout_of(error: httpx.TimeoutException, options: HttpOptions) -> float:
    return options.connect_timeout if isinstance(error, httpx.ConnectTimeout) else options.timeout


def _json_object(response: httpx.Response, where: str) -> dict[str, Any]:
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MalformedResponseError(f"{where} answered with invalid JSON: {response.text[:200]!r}") from e
    if not isinstance(body, dict):
        raise MalformedResponseError(f"{where} answered with a JSON {type(body).__name__}, expected an object")
    return body


def _error_message(response: httpx.Response) -> str:
    """The server's error message: vLLM sends {"error": {"message": ...}} (newer) or
    {"object": "error", "message": ...} (older)."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return response.text[:300] or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
        if isinstance(body.get("message"), str):
            return body["message"]
        if isinstance(body.get("detail"), str):
            return body["detail"]
    return str(body)[:300]
