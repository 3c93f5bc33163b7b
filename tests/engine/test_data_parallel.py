"""In-process data parallelism: `VLLMPolicy` / `VLLMVerifier` keep a problem's requests on
one vLLM data-parallel rank (`data_parallel_rank=`), new problems on the least-loaded rank;
nothing is sent with one rank. On a stand-in for `AsyncLLM` that records what it is given
(no engine; needs the vllm package for SamplingParams / PoolingParams). Also the problem
keys and rank choice themselves (`ttsearch.backends.affinity`) and the `ttsearch run` flags."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from ttsearch.backends.affinity import ProblemPrefixes, RankAffinity

TOY = Path(__file__).resolve().parents[2] / "ttsearch" / "assets" / "toy"
NO_RANK = object()


# -- the keys and the rule ---------------------------------------------------------------


def test_problem_prefixes_find_the_longest_registered_prompt_and_forget_the_oldest():
    keys = ProblemPrefixes(max_problems=2)
    a, ab = keys.add([1, 2]), keys.add([1, 2, 3])
    assert keys.key_of([1, 2, 3, 4]) == ab and keys.key_of([1, 2, 9]) == a
    assert keys.key_of([1]) is None and keys.key_of([7, 1, 2]) is None
    keys.key_of([1, 2, 5])  # a used last: ab is the oldest now
    keys.add([5])
    assert len(keys) == 2 and keys.key_of([1, 2, 3]) == a and keys.key_of([5, 6]) == (5,)
    with pytest.raises(ValueError):
        ProblemPrefixes(max_problems=0)


def test_rank_affinity_least_loaded_then_sticky_and_bounded():
    ranks = RankAffinity(3, max_problems=3)
    with ranks.route("a") as r_a, ranks.route("a") as again:
        assert r_a == again == 0 and ranks.in_flight == [2, 0, 0]
        with ranks.route("b") as r_b:
            assert r_b == 1  # fewest in flight, then fewest problems
        with ranks.route("c") as r_c:
            assert r_c == 2
        with ranks.route("b") as r_b:
            assert r_b == 1  # sticky, though rank 0 holds more in flight
    assert ranks.in_flight == [0, 0, 0] and ranks.problems == [1, 1, 1]
    with ranks.route("d") as r_d:  # a fourth problem: "a", used longest ago, is forgotten
        assert r_d == 0
    assert ranks.rank_of("a") is None and ranks.problems == [1, 1, 1]


def test_rank_affinity_ties_go_to_fewest_problems_and_old_keys_are_forgotten():
    ranks = RankAffinity(2, max_problems=2)
    for key, expected in (("a", 0), ("b", 1), ("c", 0)):
        with ranks.route(key) as rank:
            assert rank == expected
    # "a" was forgotten (the bound is 2): its rank gave the problem back
    assert ranks.rank_of("a") is None and ranks.problems == [1, 1]
    with ranks.route(None) as rank:  # no problem: least loaded, nothing kept
        assert rank == 0
    assert ranks.problems == [1, 1] and ranks.rank_of(None) is None


# -- a recording AsyncLLM stand-in ---------------------------------------------------------


class RecordingEngine:
    """Records the keyword arguments of every generate / encode call; a request waits on
    `gate` (when set) so that tests can keep requests in flight."""

    def __init__(self, tokenizer, *, dp: int | None, runner="generate", encode_takes_rank=False):
        self.model_config = SimpleNamespace(
            max_model_len=512,
            hf_config=SimpleNamespace(eos_token_id=tokenizer.eos_token_id),
            runner_type=runner,
            pooler_config=SimpleNamespace(pooling_type="ALL"),
        )
        parallel = None if dp is None else SimpleNamespace(data_parallel_size=dp, data_parallel_size_local=dp)
        self.vllm_config = SimpleNamespace(
            scheduler_config=SimpleNamespace(enable_chunked_prefill=False),
            cache_config=SimpleNamespace(enable_prefix_caching=True, block_size=16),
            parallel_config=parallel,
        )
        self.tokenizer = tokenizer
        self.calls: list[tuple[str, list[int], object]] = []  # (method, prompt ids, rank or NO_RANK)
        self.gate: asyncio.Event | None = None
        self.label_ids: tuple[int, int] | None = None
        if encode_takes_rank:
            self.encode = self._encode_with_rank

    def _record(self, method, prompt, kwargs):
        assert set(kwargs) <= {"data_parallel_rank"}
        ids = prompt["prompt_token_ids"] if isinstance(prompt, dict) else prompt.prompt_token_ids
        self.calls.append((method, list(ids), kwargs.get("data_parallel_rank", NO_RANK)))

    async def generate(self, prompt, params, request_id, *, data_parallel_rank=None, **kwargs):
        if data_parallel_rank is not None:
            kwargs["data_parallel_rank"] = data_parallel_rank
        self._record("generate", prompt, kwargs)
        if self.gate is not None:
            await self.gate.wait()
        if self.label_ids is not None:  # a generative PRM: label log probabilities
            good, bad = self.label_ids
            lp = {good: SimpleNamespace(logprob=-0.1), bad: SimpleNamespace(logprob=-2.0)}
            outputs = [SimpleNamespace(logprobs=[lp])]
        else:
            ids = self.tokenizer.encode("1 + 1 = 2\n\n", add_special_tokens=False)
            outputs = [
                SimpleNamespace(index=i, token_ids=ids, text="1 + 1 = 2\n\n", finish_reason="stop", stop_reason="\n\n")
                for i in range(params.n)
            ]
        yield SimpleNamespace(finished=True, outputs=outputs, num_cached_tokens=0)

    async def encode(self, prompt, params, request_id, lora_request=None):  # vLLM 0.26 / 0.32: no rank
        self._record("encode", prompt, {})
        async for out in self._pool(prompt):
            yield out

    async def _encode_with_rank(self, prompt, params, request_id, data_parallel_rank=None):
        self._record("encode", prompt, {} if data_parallel_rank is None else {"data_parallel_rank": data_parallel_rank})
        async for out in self._pool(prompt):
            yield out

    async def _pool(self, prompt):
        ids = prompt["prompt_token_ids"] if isinstance(prompt, dict) else prompt.prompt_token_ids
        if self.gate is not None:
            await self.gate.wait()
        rows = SimpleNamespace(tolist=lambda: [[0.75, 0.25]] * len(ids))
        yield SimpleNamespace(finished=True, outputs=SimpleNamespace(data=rows), num_cached_tokens=0)

    async def abort(self, request_id):
        pass

    def shutdown(self, timeout=None):
        pass


@pytest.fixture(scope="module")
def toy_tokenizer():
    pytest.importorskip("vllm")
    from ttsearch.backends.http.served_model import load_tokenizer

    return load_tokenizer(TOY / "policy")


def make_policy(engine):
    from ttsearch.backends.vllm.policy import VLLMPolicy
    from ttsearch.toy.tokenizer import TOY_SYSTEM_PROMPT

    return VLLMPolicy(engine, system_prompt=TOY_SYSTEM_PROMPT, chat_format="tokenizer")


def request_for(prompt, *steps):
    from ttsearch.core.backend import SampleRequest

    ids = tuple(prompt) + tuple(t for s in steps for t in s)
    return SampleRequest(
        prompt_token_ids=ids, n=2, temperature=1.0, top_p=1.0, max_tokens=16, stop=("\n\n",), seed=None
    )


def ranks_of(engine, prompt):
    return {rank for _, ids, rank in engine.calls if ids[: len(prompt)] == list(prompt)}


# -- the policy --------------------------------------------------------------------------


async def test_policy_keeps_each_problem_on_one_rank(toy_tokenizer):
    engine = RecordingEngine(toy_tokenizer, dp=2)
    policy = make_policy(engine)
    assert policy.data_parallel_ranks == 2 and policy.routes("generate")
    p, q = policy.encode_problem("1 + 1"), policy.encode_problem("2 + 2")
    step = toy_tokenizer.encode("1 + 1 = 2\n\n", add_special_tokens=False)
    await asyncio.gather(policy.sample(request_for(p)), policy.sample(request_for(q)))
    for depth in range(1, 4):  # later steps of each problem, interleaved
        await asyncio.gather(
            policy.sample(request_for(q, *[step] * depth)), policy.sample(request_for(p, *[step] * depth))
        )
    assert len(engine.calls) == 8
    (rank_p,), (rank_q,) = ranks_of(engine, p), ranks_of(engine, q)
    assert {rank_p, rank_q} == {0, 1}
    assert policy.rank_affinity.rank_of(tuple(p)) == rank_p


async def test_policy_sends_a_new_problem_to_the_least_loaded_rank(toy_tokenizer):
    engine = RecordingEngine(toy_tokenizer, dp=2)
    policy = make_policy(engine)
    a, b, c = (policy.encode_problem(f"{k} + 1") for k in (1, 2, 3))
    await policy.sample(request_for(a))  # a -> rank 0, finished
    engine.gate = asyncio.Event()
    busy = [asyncio.create_task(policy.sample(request_for(b))) for _ in range(2)]  # b -> rank 1 (fewer problems)
    await asyncio.sleep(0.01)
    assert policy.rank_affinity.in_flight == [0, 2]
    held = asyncio.create_task(policy.sample(request_for(c)))  # c: ranks tie on problems, rank 0 has none in flight
    await asyncio.sleep(0.01)
    engine.gate.set()
    await asyncio.gather(*busy, held)
    assert ranks_of(engine, a) == {0} and ranks_of(engine, b) == {1} and ranks_of(engine, c) == {0}
    assert policy.rank_affinity.problems == [2, 1] and policy.rank_affinity.in_flight == [0, 0]
    # a prompt of no problem encoded here: the least-loaded rank (none in flight: rank 1
    # has fewer problems), no affinity kept
    await policy.sample(request_for(toy_tokenizer.encode("unrelated", add_special_tokens=False)))
    assert engine.calls[-1][2] == 1 and policy.rank_affinity.problems == [2, 1]


@pytest.mark.parametrize("dp", [1, None])
async def test_policy_with_one_rank_sends_no_rank(toy_tokenizer, dp):
    engine = RecordingEngine(toy_tokenizer, dp=dp)
    policy = make_policy(engine)
    assert policy.data_parallel_ranks == 1 and policy.rank_affinity is None and not policy.routes("generate")
    p = policy.encode_problem("1 + 1")
    await policy.sample(request_for(p))
    assert engine.calls and all(rank is NO_RANK for _, _, rank in engine.calls)


def test_external_load_balancing_leaves_the_rank_to_vllm(toy_tokenizer):
    from ttsearch.backends.vllm.engine import data_parallel_ranks

    parallel = SimpleNamespace(data_parallel_size=4, data_parallel_size_local=1, data_parallel_external_lb=True)
    assert data_parallel_ranks(SimpleNamespace(vllm_config=SimpleNamespace(parallel_config=parallel))) == 1
    parallel = SimpleNamespace(data_parallel_size=4, data_parallel_size_local=2, data_parallel_hybrid_lb=True)
    assert data_parallel_ranks(SimpleNamespace(vllm_config=SimpleNamespace(parallel_config=parallel))) == 2
    assert data_parallel_ranks(SimpleNamespace()) == 1


# -- the verifier ------------------------------------------------------------------------


def make_verifier(engine, tokenizer, mode):
    from ttsearch.backends.vllm.verifier import VLLMVerifier
    from ttsearch.toy.backends import TOY_PRM_FORMAT

    verifier = VLLMVerifier(engine, tokenizer, format=TOY_PRM_FORMAT, mode=mode)
    engine.label_ids = verifier.encoder.label_ids if verifier.mode == "generative" else None
    return verifier


def question_ranks(engine, verifier, question):
    prefix = verifier.encoder.encode_requests(question, ["x"])[0].token_ids[:4]
    return {rank for _, ids, rank in engine.calls if ids[:4] == list(prefix)}


async def test_generative_verifier_keeps_each_question_on_one_rank(toy_tokenizer):
    engine = RecordingEngine(toy_tokenizer, dp=2)
    verifier = make_verifier(engine, toy_tokenizer, "generative")
    assert verifier.routes("generate")
    steps = ["1 + 1 = 2", "2 + 2 = 4", "4 + 4 = 8"]
    for k in range(1, 4):
        await asyncio.gather(
            verifier.score("q one", steps[:k], first=k - 1), verifier.score("q two", steps[:k], first=k - 1)
        )
    ranks = {rank for _, _, rank in engine.calls}
    assert ranks == {0, 1}
    assert verifier.rank_affinity.rank_of("q one") != verifier.rank_affinity.rank_of("q two")
    for question in ("q one", "q two"):
        assert question_ranks(engine, verifier, question) == {verifier.rank_affinity.rank_of(question)}


async def test_pooling_verifier_routes_only_where_encode_takes_a_rank(toy_tokenizer, caplog):
    engine = RecordingEngine(toy_tokenizer, dp=2, runner="pooling")
    with caplog.at_level(logging.WARNING, logger="ttsearch.backends.vllm.verifier"):
        verifier = make_verifier(engine, toy_tokenizer, "pooling")
    assert verifier.data_parallel_ranks == 2 and not verifier.routes("encode")
    assert "takes no data_parallel_rank" in caplog.text
    result = await verifier.score("q one", ["1 + 1 = 2", "2 + 2 = 4"])
    assert len(result.scores) == 2 and engine.calls and all(r is NO_RANK for _, _, r in engine.calls)

    engine = RecordingEngine(toy_tokenizer, dp=2, runner="pooling", encode_takes_rank=True)
    verifier = make_verifier(engine, toy_tokenizer, "pooling")
    assert verifier.routes("encode")
    await asyncio.gather(verifier.score("q one", ["1 + 1 = 2"]), verifier.score("q two", ["1 + 1 = 2"]))
    await asyncio.gather(
        verifier.score("q two", ["1 + 1 = 2", "2 + 2 = 4"], first=1),
        verifier.score("q one", ["1 + 1 = 2", "2 + 2 = 4"], first=1),
    )
    assert {r for _, _, r in engine.calls} == {0, 1}
    for question in ("q one", "q two"):
        assert question_ranks(engine, verifier, question) == {verifier.rank_affinity.rank_of(question)}


async def test_verifier_with_one_rank_sends_no_rank(toy_tokenizer):
    engine = RecordingEngine(toy_tokenizer, dp=1)
    verifier = make_verifier(engine, toy_tokenizer, "generative")
    await verifier.score("q one", ["1 + 1 = 2"])
    assert engine.calls and all(r is NO_RANK for _, _, r in engine.calls)


# -- start-up settings ---------------------------------------------------------------------


def test_data_parallel_size_reaches_the_engine_args_only_above_one(monkeypatch):
    pytest.importorskip("vllm")
    from ttsearch.backends.vllm import engine as vllm_engine
    from ttsearch.backends.vllm import policy as vllm_policy
    from ttsearch.backends.vllm import verifier as vllm_verifier
    from ttsearch.toy.backends import TOY_PRM_FORMAT

    seen = []

    def fake_start(model, **settings):
        seen.append(settings)
        raise RuntimeError("stop here")

    monkeypatch.setattr(vllm_policy, "start_engine", fake_start)
    monkeypatch.setattr(vllm_verifier, "start_engine", fake_start)
    for size in (1, 3):
        with pytest.raises(RuntimeError, match="stop here"):
            vllm_policy.VLLMPolicy.from_pretrained(TOY / "policy", data_parallel_size=size)
        with pytest.raises(RuntimeError, match="stop here"):
            vllm_verifier.VLLMVerifier.from_pretrained(TOY / "prm", format=TOY_PRM_FORMAT, data_parallel_size=size)
    assert [s["data_parallel_size"] for s in seen] == [None, None, 3, 3]
    with pytest.raises(ValueError, match="data_parallel_size must be an integer >= 1"):
        vllm_policy.VLLMPolicy.from_pretrained(TOY / "policy", data_parallel_size=0)
    # start_engine leaves a None setting out of AsyncEngineArgs (vLLM's default: 1)
    assert vllm_engine.data_parallel_setting(1) is None and vllm_engine.data_parallel_setting(2) == 2


def test_cli_data_parallel_flags_reach_from_pretrained(monkeypatch):
    pytest.importorskip("vllm")
    from ttsearch.backends.prm_formats import RLHFLOW
    from ttsearch.backends.vllm.policy import VLLMPolicy
    from ttsearch.backends.vllm.verifier import VLLMVerifier
    from ttsearch.cli import app as cli
    from ttsearch.cli.run import recipe_from_run_flags
    from ttsearch.study.engines import start_backends
    from ttsearch.study.preflight import Prepared

    calls = {}

    class Started:
        async def close(self):
            pass

    def record(role):
        def from_pretrained(model, **kwargs):
            calls[role] = kwargs
            return Started()

        return from_pretrained

    monkeypatch.setattr(VLLMPolicy, "from_pretrained", record("policy"))
    monkeypatch.setattr(VLLMVerifier, "from_pretrained", record("prm"))
    base = ["run", "--policy", "p", "--prm", "r", "--strategy", "beam", "--n", "4", "--out", "o"]

    def start(flags):
        recipe = recipe_from_run_flags(cli.build_parser().parse_args(flags))
        # what preflight resolves (without it: "p" and "r" are no models to download here)
        prepared = Prepared(recipe, [], [], policy_model="p", prm_model="r", prm_format=RLHFLOW)
        asyncio.run(start_backends(prepared))  # the one backend factory every command uses

    start(base + ["--policy-data-parallel-size", "2", "--prm-data-parallel-size", "4"])
    assert calls["policy"]["data_parallel_size"] == 2 and calls["prm"]["data_parallel_size"] == 4
    start(base)
    assert calls["policy"]["data_parallel_size"] == 1 and calls["prm"]["data_parallel_size"] == 1
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(base + ["--policy-data-parallel-size", "0"])
