"""Request bodies: what `parse_request` accepts, and the field every refusal names."""

from __future__ import annotations

from typing import Any

import pytest

from ttsearch.serve import ApiError, parse_request

CHAT = {"model": "beam-4", "messages": [{"role": "user", "content": "What is 1 + 2?"}]}


def test_a_chat_body_becomes_a_search_request() -> None:
    body = {
        **CHAT,
        "temperature": 0.7,
        "top_p": 0.9,
        "max_completion_tokens": 64,
        "seed": 3,
        "stream": True,
        "stream_options": {"include_usage": True},
        "search": {"width": 2},
        "user": "someone",  # fields a search has no use for but that change nothing are ignored
        "presence_penalty": 0,
    }
    request = parse_request("chat", body)
    assert (request.model, request.problem, request.temperature, request.top_p) == (
        "beam-4",
        "What is 1 + 2?",
        0.7,
        0.9,
    )
    assert (request.max_tokens, request.seed, request.stream, request.include_usage) == (64, 3, True, True)
    assert request.search == {"width": 2} and request.n is None


def test_text_parts_and_a_one_prompt_list_are_read() -> None:
    parts = [{"type": "text", "text": "What is "}, {"type": "text", "text": "1 + 2?"}]
    assert parse_request("chat", {"model": "m", "messages": [{"role": "user", "content": parts}]}).problem == (
        "What is 1 + 2?"
    )
    assert parse_request("completion", {"model": "m", "prompt": ["2 + 2?"], "max_tokens": 5}).problem == "2 + 2?"


@pytest.mark.parametrize(
    ("endpoint", "body", "param", "words"),
    [
        ("chat", [CHAT], None, "must be a JSON object"),
        ("chat", {"messages": CHAT["messages"]}, "model", "model is required"),
        ("chat", {"model": "m"}, "messages", "one user message"),
        (
            "chat",
            {"model": "m", "messages": [{"role": "system", "content": "be brief"}, *CHAT["messages"]]},
            "messages",
            "exactly one user message",
        ),
        ("chat", {"model": "m", "messages": [{"role": "user", "content": "  "}]}, "messages[0].content", "empty"),
        ("chat", {"model": "m", "messages": [{"role": "user", "content": 3}]}, "messages[0].content", "a number"),
        ("chat", {**CHAT, "temperature": 2.5}, "temperature", "<= 2.0"),
        ("chat", {**CHAT, "temperature": "hot"}, "temperature", "must be a number"),
        ("chat", {**CHAT, "top_p": 0}, "top_p", "> 0.0"),
        ("chat", {**CHAT, "n": 0}, "n", "between 1 and"),
        ("chat", {**CHAT, "n": True}, "n", "must be an integer"),
        ("chat", {**CHAT, "max_tokens": 0}, "max_tokens", "between 1 and"),
        ("chat", {**CHAT, "max_tokens": 5, "max_completion_tokens": 6}, "max_completion_tokens", "differ"),
        ("chat", {**CHAT, "seed": 1.5}, "seed", "must be an integer"),
        ("chat", {**CHAT, "stop": ["\n"]}, "stop", "splits solutions into steps"),
        ("chat", {**CHAT, "logprobs": True}, "logprobs", "not supported"),
        ("chat", {**CHAT, "tools": [{"type": "function"}]}, "tools", "not supported"),
        ("chat", {**CHAT, "stream": "yes"}, "stream", "true or false"),
        ("chat", {**CHAT, "stream_options": {"include_usage": True}}, "stream_options", "only allowed with stream"),
        ("chat", {**CHAT, "search": [16]}, "search", "must be an object"),
        ("completion", {"model": "m", "prompt": ["a", "b"]}, "prompt", "one prompt per request"),
        ("completion", {"model": "m", "prompt": [1, 2, 3]}, "prompt", "token ids are not supported"),
        ("completion", {"model": "m", "prompt": "2 + 2?", "echo": True}, "echo", "not supported"),
    ],
)
def test_a_bad_field_is_refused_by_name(endpoint: Any, body: Any, param: str | None, words: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_request(endpoint, body)
    error = caught.value
    assert error.status == 400 and error.param == param
    assert words in error.message
    assert error.body() == {
        "error": {"message": error.message, "type": "invalid_request_error", "param": param, "code": None}
    }
