"""The search service without HTTP (scripted backends): cancellation, the queue, shared
engines, and the one core addition it needs (`Searcher.solve(limits=)`)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.serve.scripted_service import client, make_service, script
from ttsearch.core.backend import SampleRequest
from ttsearch.core.search import SearchLimits
from ttsearch.core.searcher import Searcher
from ttsearch.serve import SearchService, ServiceOptions, create_app, parse_request
from ttsearch.serve.metering import SearchProgress
from ttsearch.strategies import BestOfN
from ttsearch.testing.scripted import ScriptedPolicy, ScriptedVerifier, decode


def hang_on(word: str) -> tuple[asyncio.Event, Any]:
    """A policy delay that holds the requests of problems containing `word` until released."""
    release = asyncio.Event()

    async def delay(request: SampleRequest) -> None:
        if word in decode(request.prompt_token_ids):
            await release.wait()
        await asyncio.sleep(0)

    return release, delay


def start(service: SearchService, problem: str, model: str = "best_of_n-4") -> asyncio.Task[Any]:
    request = parse_request("chat", {"model": model, "messages": [{"role": "user", "content": problem}]})
    plan = service.plan(request)
    return asyncio.create_task(service.run(service.reserve(), plan, SearchProgress()))


async def until(condition: Any) -> None:
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition not reached")


def metric(service: SearchService, line: str) -> float:
    for text in service.metrics.render().decode().splitlines():
        if text.startswith(line + " "):
            return float(text.split()[-1])
    raise AssertionError(f"{line} not in /metrics")


async def test_cancelling_a_request_cancels_its_engine_calls_and_not_the_others() -> None:
    _, delay = hang_on("hang")
    service = make_service(delay=delay)
    hung = start(service, "hang here")
    await until(lambda: service.policy_load.requests == 1)
    other = start(service, "a problem that finishes")
    hung.cancel()
    outcome = await other
    await asyncio.gather(hung, return_exceptions=True)
    assert hung.cancelled() and outcome.result.ok and len(outcome.result.candidates) == 4
    assert service.policy_load.requests == 0 and service.searcher.policy.inner.in_flight == 0  # type: ignore[attr-defined]
    assert (service.admission.running, service.admission.waiting) == (0, 0)
    assert metric(service, "ttsearch_searches_cancelled_total") == 1


async def test_a_request_cancelled_while_queued_gives_its_place_back() -> None:
    release, delay = hang_on("hang")
    service = make_service(delay=delay, options=ServiceOptions(max_concurrent_problems=1, max_queue=1))
    running = start(service, "hang here")
    queued = start(service, "waits for a slot")
    await until(lambda: service.admission.waiting == 1 and service.admission.running == 1)
    assert metric(service, "ttsearch_queue_length") == 1
    queued.cancel()
    await asyncio.gather(queued, return_exceptions=True)
    assert service.admission.waiting == 0
    third = start(service, "takes the freed place")  # the queue has room again
    release.set()
    assert (await running).result.ok and (await third).result.ok


async def test_problems_of_different_requests_are_on_the_engine_together() -> None:
    release, delay = hang_on("together")
    service = make_service(delay=delay)
    tasks = [start(service, f"together {i}", "beam-4") for i in range(3)]
    await until(lambda: service.policy_load.problems == 3)
    release.set()
    outcomes = await asyncio.gather(*tasks)
    assert all(o.result.ok for o in outcomes)
    assert service.policy_load.peak_problems == 3 and service.prm_load.peak_problems >= 1
    assert metric(service, 'ttsearch_engine_problems_in_flight_peak{engine="policy"}') == 3
    assert metric(service, "ttsearch_problems_in_flight_peak") == 3


async def test_a_client_that_disconnects_cancels_its_search() -> None:
    _, delay = hang_on("hang")
    service = make_service(delay=delay)
    app = create_app(service, api_key=None)
    body = {"model": "best_of_n-4", "messages": [{"role": "user", "content": "hang here"}]}
    handler, gone, _ = post_then_disconnect(app, body)
    await until(lambda: service.policy_load.requests == 1)
    gone.set()
    await asyncio.wait_for(handler, 5)
    assert service.policy_load.requests == 0 and service.admission.running == 0
    assert metric(service, "ttsearch_searches_cancelled_total") == 1
    assert metric(service, 'ttsearch_requests_total{endpoint="/v1/chat/completions",status="499"}') == 1


async def test_health_and_metrics_text() -> None:
    async with client(make_service()) as http:
        await http.post(
            "/v1/chat/completions", json={"model": "beam-4", "messages": [{"role": "user", "content": "1?"}]}
        )
        health = (await http.get("/health")).json()
        metrics = await http.get("/metrics")
    assert health["policy"] == "scripted" and (health["running"], health["queued"]) == (0, 0)
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    for name in (
        'ttsearch_requests_total{endpoint="/v1/chat/completions",status="200"} 1.0',
        "ttsearch_generated_tokens_total",
        'ttsearch_prm_tokens_total{kind="computed"}',
        'ttsearch_prm_tokens_total{kind="cached"}',
        "ttsearch_request_latency_seconds_bucket",
        "ttsearch_queue_wait_seconds_count 1.0",
        "ttsearch_problems_in_flight 0.0",
        "ttsearch_queue_length 0.0",
        'ttsearch_engine_requests_in_flight{engine="prm"} 0.0',
    ):
        assert name in text, name


async def test_solve_takes_limits_per_call() -> None:
    searcher = Searcher(
        ScriptedPolicy(script), ScriptedVerifier(), limits=SearchLimits(max_solution_tokens=10_000), seed=0
    )
    short = await searcher.solve("3 + 4?", BestOfN(n=2), limits=SearchLimits(max_solution_tokens=5))
    full = await searcher.solve("3 + 4?", BestOfN(n=2))
    assert [(c.num_tokens, c.finish) for c in short.candidates] == [(5, "length"), (5, "length")]
    assert all(c.finish == "eos" and c.num_tokens > 5 for c in full.candidates)


async def test_a_streaming_client_that_disconnects_cancels_its_search() -> None:
    _, delay = hang_on("hang")
    service = make_service(delay=delay)
    app = create_app(service, api_key=None, progress_interval=0.01)
    body = {"model": "best_of_n-4", "stream": True, "messages": [{"role": "user", "content": "hang here"}]}
    handler, gone, sent = post_then_disconnect(app, body)
    await until(lambda: service.policy_load.requests == 1 and len(sent) >= 2)  # headers and the role chunk
    gone.set()
    await asyncio.wait_for(handler, 5)
    await until(lambda: service.policy_load.requests == 0 and service.admission.running == 0)
    assert metric(service, "ttsearch_searches_cancelled_total") == 1
    assert metric(service, 'ttsearch_requests_total{endpoint="/v1/chat/completions",status="499"}') == 1


def post_then_disconnect(
    app: Any, body: dict[str, Any]
) -> tuple[asyncio.Task[None], asyncio.Event, list[dict[str, Any]]]:
    """POSTs `body` as JSON to the app's /v1/chat/completions, an ASGI client that disconnects
    once the returned event is set; returns the app's task, that event and the messages the
    app has sent so far (a list that keeps filling)."""
    gone = asyncio.Event()
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    return asyncio.create_task(app(_scope("/v1/chat/completions"), receive, send)), gone, sent


def _scope(path: str) -> dict[str, Any]:
    """An ASGI HTTP scope for a JSON POST to `path` (as uvicorn would send it)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
    }
