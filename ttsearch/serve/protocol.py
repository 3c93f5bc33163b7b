"""OpenAI request bodies in, a checked `SearchRequest` out (no HTTP, no engines).

`parse_request("chat" | "completion", body)` reads a `/v1/chat/completions` or
`/v1/completions` body: the problem (one user message, or one prompt), the API's sampling
fields that mean something to a search (`n`, `temperature`, `top_p`, `max_tokens`,
`seed`), streaming, and the extension object `search` (strategy options). A field that is
malformed, out of the API's range, or asks for something a search cannot do (`stop`,
`logprobs`, tools, ...) is an `ApiError` naming the field, before anything is queued.
Whether a field contradicts the chosen model (e.g. `n` > 1 for a search) is the
service's call (`ttsearch.serve.service`), which knows the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from ttsearch.serve.errors import ApiError

__all__ = ["MAX_CHOICES", "Endpoint", "SearchRequest", "parse_request"]

Endpoint = Literal["chat", "completion"]

MAX_CHOICES = 128  # `n` of plain sampling: independent samples returned as choices

# Fields of the API a search cannot honour, with the value that means "not used": a request
# that sets one to anything else is refused rather than silently answered without it.
_UNSUPPORTED: dict[str, tuple[object, ...]] = {
    "logprobs": (None, False, 0),
    "top_logprobs": (None, 0),
    "echo": (None, False),
    "suffix": (None, ""),
    "best_of": (None, 1),
    "logit_bias": (None, {}),
    "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0),
    "tools": (None, []),
    "tool_choice": (None, "none"),
    "functions": (None, []),
    "function_call": (None, "none"),
    "response_format": (None, {"type": "text"}),
    "audio": (None,),
    "modalities": (None, ["text"]),
}


@dataclass(frozen=True, slots=True)
class SearchRequest:
    """A completion request as the search service takes it; `None`: the field was not sent."""

    endpoint: Endpoint
    model: str  # a search preset (`beam-16`), `<strategy>-<N>`, or the policy's own name
    problem: str  # the user message's text, or the prompt
    n: int | None = None  # choices; only plain sampling returns more than one
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None  # per solution (each candidate's generated tokens)
    seed: int | None = None
    stream: bool = False
    include_usage: bool = False  # stream_options.include_usage: a last chunk with `usage`
    search: dict[str, Any] = field(default_factory=dict)  # strategy options (`extra_body={"search": ...}`)


def parse_request(endpoint: Endpoint, body: object) -> SearchRequest:
    """Check a decoded JSON body; raise `ApiError` naming the first bad field."""
    if not isinstance(body, dict):
        raise ApiError(f"the request body must be a JSON object, got {_json_type(body)}")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise ApiError("model is required: a search such as 'best_of_n-16' (GET /v1/models lists them)", param="model")
    for name, unused in _UNSUPPORTED.items():
        if name in body and not any(_same(body[name], value) for value in unused):
            raise ApiError(f"{name} is not supported: the server answers with a search's selected solution", param=name)
    if body.get("stop") not in (None, "", []):
        raise ApiError(
            "stop is not supported: the search splits solutions into steps itself and ends them at the "
            "model's end of turn",
            param="stop",
        )
    problem = _chat_problem(body) if endpoint == "chat" else _prompt_problem(body)
    stream = _optional(body, "stream", bool) or False
    return SearchRequest(
        endpoint=endpoint,
        model=model.strip(),
        problem=problem,
        n=_integer(body, "n", low=1, high=MAX_CHOICES),
        temperature=_number(body, "temperature", low=0.0, high=2.0),
        top_p=_number(body, "top_p", low=0.0, high=1.0, open_low=True),
        max_tokens=_max_tokens(body),
        seed=_integer(body, "seed", low=-(2**63), high=2**64 - 1),
        stream=stream,
        include_usage=_include_usage(body, stream),
        search=_search_options(body),
    )


def _chat_problem(body: dict[str, Any]) -> str:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError("messages is required: a list holding one user message (the problem)", param="messages")
    roles = [m.get("role") if isinstance(m, dict) else None for m in messages]
    if roles != ["user"]:
        raise ApiError(
            f"messages: a search solves one problem, so send exactly one user message; got roles {roles} "
            "(the policy's system prompt is the server's: its recipe's sampling.system_prompt)",
            param="messages",
        )
    return _text(messages[0].get("content"), "messages[0].content")


def _prompt_problem(body: dict[str, Any]) -> str:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and not all(isinstance(x, int) for x in prompt):
        if len(prompt) != 1:
            raise ApiError(
                f"prompt: send one prompt per request (got a list of {len(prompt)}); concurrent requests "
                "share the engines' batches anyway",
                param="prompt",
            )
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise ApiError(
            f"prompt must be a string (token ids are not supported), got {_json_type(prompt)}", param="prompt"
        )
    return _nonempty(prompt, "prompt")


def _text(content: object, where: str) -> str:
    """A message's text: a string, or a list of `{"type": "text", "text": ...}` parts."""
    if isinstance(content, list):
        parts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ApiError(
                    f"{where}[{i}]: only text parts ({{'type': 'text', 'text': ...}}) are supported", param=where
                )
            parts.append(part["text"])
        content = "".join(parts)
    if not isinstance(content, str):
        raise ApiError(f"{where} must be a string or a list of text parts, got {_json_type(content)}", param=where)
    return _nonempty(content, where)


def _nonempty(text: str, where: str) -> str:
    if not text.strip():
        raise ApiError(f"{where} is empty: there is no problem to solve", param=where)
    return text


def _max_tokens(body: dict[str, Any]) -> int | None:
    """`max_tokens`, or the chat API's newer name `max_completion_tokens` (the same here)."""
    old = _integer(body, "max_tokens", low=1, high=2**31)
    new = _integer(body, "max_completion_tokens", low=1, high=2**31)
    if old is not None and new is not None and old != new:
        raise ApiError(
            f"max_tokens ({old}) and max_completion_tokens ({new}) differ; send one", param="max_completion_tokens"
        )
    return new if new is not None else old


def _include_usage(body: dict[str, Any], stream: bool) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not stream:
        raise ApiError("stream_options is only allowed with stream=true", param="stream_options")
    if not isinstance(options, dict):
        raise ApiError(f"stream_options must be an object, got {_json_type(options)}", param="stream_options")
    return bool(_optional(options, "include_usage", bool, where="stream_options.include_usage"))


def _search_options(body: dict[str, Any]) -> dict[str, Any]:
    options = body.get("search")
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ApiError(
            f'search must be an object of strategy options (e.g. {{"n": 16, "width": 4}}), got {_json_type(options)}',
            param="search",
        )
    return dict(options)


def _optional(body: dict[str, Any], name: str, kind: type[bool], *, where: str | None = None) -> bool | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, kind):
        raise ApiError(f"{where or name} must be true or false, got {value!r}", param=where or name)
    return value


def _integer(body: dict[str, Any], name: str, *, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(f"{name} must be an integer, got {value!r}", param=name)
    if not low <= value <= high:
        raise ApiError(f"{name} must be between {low} and {high}, got {value}", param=name)
    return value


def _number(body: dict[str, Any], name: str, *, low: float, high: float, open_low: bool = False) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ApiError(f"{name} must be a number, got {value!r}", param=name)
    if value > high or value < low or (open_low and value == low):
        bound = f"> {low}" if open_low else f">= {low}"
        raise ApiError(f"{name} must be {bound} and <= {high}, got {value}", param=name)
    return float(value)


def _same(value: object, unused: object) -> bool:
    return (value is None and unused is None) or (type(value) is type(unused) and value == unused)


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number" if isinstance(value, int | float) else type(value).__name__)
