"""The HTTP API on the scripted backends (in process, through ASGI): responses, model names,
the errors' shape, streaming, backpressure, and one request's failure left to itself."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from tests.serve.scripted_service import client, make_service
from ttsearch.core.backend import SampleRequest
from ttsearch.serve import SearchService, ServiceOptions
from ttsearch.testing.scripted import ScriptedPolicy


def chat(model: str, problem: str = "What is 3 + 4?", **fields: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": problem}], **fields}


async def post(http: httpx.AsyncClient, body: Any, path: str = "/v1/chat/completions") -> httpx.Response:
    return await http.post(path, json=body)


async def test_a_search_answers_with_its_best_candidate_of_the_selected_answer() -> None:
    async with client(make_service()) as http:
        response = await post(http, chat("best_of_n-4", seed=5))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion" and body["model"] == "best_of_n-4"
    search = body["search"]
    candidates = search["candidates"]
    assert len(candidates) == 4 and search["strategy"] == "BestOfN" and search["seed"] == 5
    # Samples 0, 2 and 3 answer 7 (weighted vote 0.5 + 0.6 + 0.65 beats 8's 0.55): the
    # message is the best scored of them, sample 3.
    assert search["answer"] == "7" and search["selection"] == "weighted"
    assert [c["score"] for c in candidates] == [0.5, 0.55, 0.6, 0.65]
    assert search["selected"] == 3 and candidates[3]["answer"] == "7"
    (choice,) = body["choices"]
    assert choice["message"] == {"role": "assistant", "content": candidates[3]["text"]}
    assert choice["finish_reason"] == "stop" and "d1i3" in choice["message"]["content"]
    usage = body["usage"]
    assert usage["completion_tokens"] == search["usage"]["generated_tokens"] == sum(c["tokens"] for c in candidates)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prm_tokens"] == search["usage"]["verifier_tokens"] > 0


async def test_the_recipe_entry_options_hold_at_any_n_and_search_overrides_them() -> None:
    async with client(make_service()) as http:
        preset = (await post(http, chat("beam-8"))).json()["search"]
        other_n = (await post(http, chat("beam-6", search={"width": 3}))).json()["search"]
        unlisted = (await post(http, chat("dvts-4"))).json()["search"]
    assert (preset["options"]["n"], preset["options"]["width"]) == (8, 2)
    assert (other_n["options"]["n"], other_n["options"]["width"]) == (6, 3)
    assert unlisted["strategy"] == "DVTS" and unlisted["options"]["temperature"] == 1.0  # the recipe's sampling


async def test_plain_sampling_returns_n_choices_and_the_same_seed_the_same_answer() -> None:
    async with client(make_service()) as http:
        first = (await post(http, chat("scripted", n=3, seed=1, temperature=0.5))).json()
        again = (await post(http, chat("scripted", n=3, seed=1, temperature=0.5))).json()
    assert [c["index"] for c in first["choices"]] == [0, 1, 2]
    assert [c["message"]["content"] for c in first["choices"]] == [c["text"] for c in first["search"]["candidates"]]
    assert first["search"]["selected"] is None and first["search"]["options"]["temperature"] == 0.5
    assert first["choices"] == again["choices"] and first["search"]["candidates"] == again["search"]["candidates"]


async def test_completions_and_max_tokens() -> None:
    async with client(make_service()) as http:
        response = await post(http, {"model": "best_of_n-4", "prompt": "3 + 4?", "max_tokens": 5}, "/v1/completions")
    body = response.json()
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    (choice,) = body["choices"]
    assert choice["finish_reason"] == "length" and len(choice["text"]) == 5  # one scripted token per character
    assert all(c["tokens"] <= 5 for c in body["search"]["candidates"])


async def test_models_lists_the_policy_and_every_preset() -> None:
    async with client(make_service()) as http:
        listed = (await http.get("/v1/models")).json()
        one = (await http.get("/v1/models/rebase-16")).json()
    assert [m["id"] for m in listed["data"]] == ["scripted", "best_of_n-4", "beam-4", "beam-8"]
    assert listed["data"][0]["search"] is None
    assert listed["data"][3]["search"] == {"strategy": "beam", "n": 8, "options": {"width": 2}}
    assert one["id"] == "rebase-16" and one["search"]["strategy"] == "REBASE" and one["search"]["n"] == 16


@pytest.mark.parametrize(
    ("body", "status", "param", "code", "words"),
    [
        (chat("beam-search"), 404, "model", "model_not_found", "does not exist"),
        (chat("nonsense-4"), 404, "model", "model_not_found", "does not exist"),
        (chat("beam-4", n=2), 400, "n", None, "returns one selected solution"),
        (chat("beam-4", search={"width": 3}), 400, "search", None, "width must be >= 1 and divide n, got n=4, width=3"),
        (chat("beam-4", search={"bogus": 1}), 400, "search", None, "'bogus'"),
        (chat("beam-4", search={"n": 0}), 400, "search.n", None, "positive integer"),
        (chat("beam-4", search={"n": 5000}), 400, "search.n", None, "limit of 1024"),
        (chat("beam-4", temperature=0.5, search={"temperature": 0.7}), 400, "temperature", None, "contradicts"),
        (chat("scripted", search={"n": 4}), 400, "search", None, "plain sampling"),
        (chat("beam-4", "x" * 200), 400, "messages", "context_length_exceeded", "context is 150 tokens"),
        (chat("beam-4", max_tokens=140), 400, "max_tokens", "context_length_exceeded", "context of 150"),
    ],
)
async def test_bad_requests_get_the_openai_error_shape(
    body: Any, status: int, param: str, code: str | None, words: str
) -> None:
    async with client(make_service(max_model_len=150)) as http:
        response = await post(http, body)
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["param"], error["code"]) == (param, code)
    assert words in error["message"] and "Traceback" not in error["message"]


async def test_malformed_json_unknown_routes_and_api_keys() -> None:
    service = make_service()
    async with client(service) as http:
        malformed = await http.post(
            "/v1/chat/completions", content=b"{not json", headers={"Content-Type": "application/json"}
        )
        missing = await http.get("/v1/nowhere")
        keyless = await http.get("/v1/models", headers={"Authorization": ""})
        wrong = await http.post(
            "/v1/completions", json={"model": "beam-4", "prompt": "1?"}, headers={"Authorization": "Bearer nope"}
        )
        health = await http.get("/health", headers={"Authorization": ""})  # probes need no key
    assert malformed.status_code == 400 and "not valid JSON" in malformed.json()["error"]["message"]
    assert missing.status_code == 404 and "/v1/nowhere" in missing.json()["error"]["message"]
    for response in (keyless, wrong):
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    assert health.status_code == 200 and health.json()["status"] == "ok"
    async with client(service, api_key=None) as open_http:
        assert (await open_http.get("/v1/models", headers={"Authorization": ""})).status_code == 200


def events(text: str) -> list[Any]:
    """The `data:` payloads of an SSE body, JSON-decoded ("[DONE]" kept as a string)."""
    out = []
    for block in text.split("\n\n"):
        if block.startswith("data: "):
            data = block.removeprefix("data: ")
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


async def test_a_stream_sends_progress_then_the_same_answer_as_a_plain_response() -> None:
    async def slow(request: SampleRequest) -> None:
        await asyncio.sleep(0.03)

    service = make_service(delay=slow)
    async with client(service, progress_interval=0.01) as http:
        plain = (await post(http, chat("beam-4", seed=9))).json()
        streamed = await post(http, chat("beam-4", seed=9, stream=True, stream_options={"include_usage": True}))
    assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/event-stream")
    chunks = events(streamed.text)
    assert chunks[-1] == "[DONE]"
    role, *middle, usage_chunk, _ = chunks
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    progress = [c["search"]["progress"] for c in middle if "progress" in c.get("search", {})]
    assert progress and progress[-1]["samples"] > progress[0]["samples"] >= 0
    assert all(c["choices"][0]["delta"] == {} for c in middle if "progress" in c.get("search", {}))
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in middle)
    assert text == plain["choices"][0]["message"]["content"]
    last = middle[-1]
    assert (
        last["choices"][0]["finish_reason"] == "stop" and last["search"]["candidates"] == plain["search"]["candidates"]
    )
    assert usage_chunk["choices"] == [] and usage_chunk["usage"] == plain["usage"]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == role["id"] for c in chunks[:-1])


async def test_past_the_queue_bound_requests_get_429_with_retry_after() -> None:
    release = asyncio.Event()

    async def held(request: SampleRequest) -> None:
        await release.wait()

    service = make_service(delay=held, options=ServiceOptions(max_concurrent_problems=1, max_queue=1))
    async with client(service) as http:
        first = asyncio.create_task(post(http, chat("best_of_n-4", "first")))
        second = asyncio.create_task(post(http, chat("best_of_n-4", "second")))
        while service.admission.running + service.admission.waiting < 2:
            await asyncio.sleep(0.001)
        refused = await post(http, chat("best_of_n-4", "third"))
        release.set()
        answered = await asyncio.gather(first, second)
        metrics = (await http.get("/metrics")).text
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert (
        refused.json()["error"]["type"] == "rate_limit_error" and "queue limit 1" in refused.json()["error"]["message"]
    )
    assert [r.status_code for r in answered] == [200, 200]
    assert 'ttsearch_requests_total{endpoint="/v1/chat/completions",status="429"} 1.0' in metrics
    assert 'ttsearch_requests_total{endpoint="/v1/chat/completions",status="200"} 2.0' in metrics


async def test_a_request_that_fails_leaves_the_others_answered() -> None:
    async with client(make_service()) as http:
        broken, *good = await asyncio.gather(
            post(http, chat("beam-4", "boom")),
            *(post(http, chat("beam-4", f"problem {i}")) for i in range(4)),
        )
    assert broken.status_code == 500
    assert broken.json()["error"]["message"] == "internal error (RuntimeError); the server's log has the details"
    assert [r.status_code for r in good] == [200] * 4


async def test_a_search_that_fails_mid_stream_ends_with_an_error_event() -> None:
    async with client(make_service()) as http:
        response = await post(http, chat("beam-4", "boom", stream=True))
    assert response.status_code == 200  # the stream had started: the error is its last event
    *_, error, done = events(response.text)
    assert done == "[DONE]" and error["error"]["type"] == "server_error"
    assert "RuntimeError" in error["error"]["message"]


async def test_a_server_without_a_prm_serves_plain_sampling_and_refuses_searches_by_name() -> None:
    from tests.serve.scripted_service import recipe, script

    service = SearchService(ScriptedPolicy(script), None, recipe=recipe())
    async with client(service) as http:
        listed = [m["id"] for m in (await http.get("/v1/models")).json()["data"]]
        plain = await post(http, chat("scripted", n=2))
        search = await post(http, chat("beam-4"))
    assert listed[0] == "scripted" and plain.status_code == 200 and len(plain.json()["choices"]) == 2
    assert search.status_code == 400 and "needs a PRM and this server has none" in search.json()["error"]["message"]
