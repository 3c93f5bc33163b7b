"""The whole engine on real vLLM: strategies searching MATH-500 prompts with the tiny policy.

The verifier is an RLHFlow-format generative PRM on the policy's own engine (a random
model scores as well as any for plumbing checks, and no second engine has to start).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ttsearch import DVTS, RLHFLOW, BeamSearch, BestOfN, MajorityVoting, Searcher, SearchLimits, load_math500
from ttsearch.backends.vllm.verifier import VLLMVerifier
from ttsearch.strategies import Revisions

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

BOS, STEP = 128000, "\n\n"


@pytest.fixture(scope="module")
def problems(shared_dir: Path) -> list[Any]:
    return load_math500(shared_dir / "data" / "math500.jsonl", limit=6)


@pytest.fixture
def searcher(vllm_policy: Any) -> Searcher:
    prm = VLLMVerifier(vllm_policy.engine, vllm_policy.tokenizer, format=RLHFLOW)  # does not own the engine
    # close_backends=False: the session's engine outlives this searcher
    return Searcher(vllm_policy, prm, limits=SearchLimits(max_solution_tokens=96), seed=0, close_backends=False)


def _check_tree(result: Any, bos_id: int = BOS) -> None:
    tree = result.tree
    prompt = tree.root.segment_token_ids
    assert prompt[0] == bos_id and prompt.count(bos_id) == 1
    for node in tree.nodes():
        if node.is_root:
            continue
        ids = node.token_ids
        assert ids.count(bos_id) == 1  # continuations never add a second BOS
        assert ids[: len(node.parent.token_ids)] == node.parent.token_ids  # parent's ids, then the new ones
        if node.finish == "step":
            assert node.segment_text.endswith(STEP)  # the separator is kept for the next step
        assert len(node.step_scores) == len(node.steps)
        assert all(0.0 <= s <= 1.0 for s in node.step_scores)


async def test_beam_search_over_many_problems_at_once(searcher: Searcher, problems: list[Any]) -> None:
    strategy = BeamSearch(n=4, width=2, max_depth=4)
    results = [r async for r in searcher.solve_all(problems, strategy)]
    assert sorted(r.index for r in results) == list(range(len(problems)))
    for result in results:
        assert result.ok
        assert len(result.candidates) == 4
        assert all(c.finish in ("eos", "length") for c in result.candidates)
        assert result.usage.generated_tokens > 0 and result.usage.verifier_calls > 0
        assert max(node.depth for node in result.tree.nodes()) <= 4
        _check_tree(result)


async def test_dvts_best_of_n_and_majority_on_vllm(searcher: Searcher, problems: list[Any]) -> None:
    dvts = await searcher.solve(problems[0], DVTS(n=4, width=2, max_depth=4))
    assert 2 <= len(dvts.candidates) <= 4 and all(c.finish != "step" for c in dvts.candidates)
    _check_tree(dvts)
    best = await searcher.solve(problems[1], BestOfN(n=4))
    assert len(best.candidates) == 4
    assert all(len(c.step_scores) >= 1 for c in best.candidates if c.text.strip())
    votes = await searcher.solve(problems[2], MajorityVoting(n=4))
    assert votes.usage.verifier_calls == 0 and len(votes.candidates) == 4


ASSISTANT = "<|start_header_id|>assistant<|end_header_id|>"


def _searcher(policy: Any, limits: SearchLimits, *, seed: int) -> Searcher:
    prm = VLLMVerifier(policy.engine, policy.tokenizer, format=RLHFLOW)  # on the policy's engine, as above
    return Searcher(policy, prm, limits=limits, seed=seed, close_backends=False)


def _revision_prompts(result: Any) -> list[tuple[Any, str]]:
    """(attempt node, its decoded prompt) for every attempt that revised an earlier one."""
    return [(node, node.prompt_token_ids) for node in result.tree.nodes() if node.prompt_token_ids is not None]


async def test_revisions_prompt_shape_and_token_accounting_on_vllm(vllm_policy: Any, problems: list[Any]) -> None:
    """The prompt-based revision format on the real Llama 3 chat template: each revision's
    prompt is the plain prompt, then the chain's earlier attempts as finished assistant turns
    (the last `context` of them), then the next assistant header; every prompt token and
    every generated token is counted."""
    searcher = _searcher(vllm_policy, SearchLimits(max_solution_tokens=64), seed=0)
    strategy = Revisions(n=4, chain_length="n", context=2, selection="majority", selection_within="majority")
    problem = problems[0]
    result = await searcher.solve(problem, strategy)
    plain = vllm_policy.encode_problem(problem.problem)
    revised = _revision_prompts(result)
    assert len(revised) == 3  # attempts 2-4 of the one chain
    for node, prompt in revised:
        earlier = node.parent.attempts()[-2:]
        assert list(prompt) == vllm_policy.encode_revision(problem.problem, earlier)
        assert list(prompt[: len(plain)]) == plain, "the plain prompt is a prefix: the prefix cache hits"
        text = vllm_policy.tokenizer.decode(prompt)
        assert prompt.count(BOS) == 1 and text.count(ASSISTANT) == len(earlier) + 1
        assert text.endswith(ASSISTANT + "\n\n")
        for attempt in earlier:
            assert attempt.strip() in text
        assert node.num_generated_tokens == len(node.segment_token_ids) and node.text == node.segment_text
    attempts = [node for node in result.tree.nodes() if not node.is_root]
    assert len(attempts) == 4
    prompts = [len(plain)] + [len(prompt) for _, prompt in revised]
    assert result.usage.prompt_tokens == sum(prompts)
    assert result.usage.generated_tokens == sum(len(node.segment_token_ids) for node in attempts)


async def test_revisions_leave_old_attempts_out_when_the_context_is_short(
    vllm_policy: Any, problems: list[Any]
) -> None:
    """With a solution budget that fills the context, a revision keeps only the chain's last
    attempt (the room left for it shrinks), never more than fits."""
    problem = problems[1]
    plain = len(vllm_policy.encode_problem(problem.problem))
    room = vllm_policy.max_model_len - plain - 8  # the plain prompt + a full solution fill the context
    searcher = _searcher(vllm_policy, SearchLimits(max_solution_tokens=room), seed=1)
    result = await searcher.solve(problem, Revisions(n=3, chain_length="n", context=4, selection="majority"))
    revised = _revision_prompts(result)
    assert len(revised) == 2
    for _, prompt in revised:
        text = vllm_policy.tokenizer.decode(prompt)
        assert text.count(ASSISTANT) == 2, "one earlier attempt: the older ones did not fit"
        assert len(prompt) < vllm_policy.max_model_len
    assert result.ok


async def test_revisions_with_an_instruction_turn_for_instruct_models_on_vllm(
    vllm_policy: Any, problems: list[Any]
) -> None:
    """`revision_instruction`: after each earlier attempt a user turn asks for a corrected
    solution (an instruct model not trained to revise); the plain prompt stays a prefix and
    every prompt token is counted. A second policy on the same engine (no new engine)."""
    from ttsearch.backends.vllm.policy import VLLMPolicy
    from ttsearch.prompts import REVISION_INSTRUCTION

    policy = VLLMPolicy(vllm_policy.engine, vllm_policy.tokenizer, revision_instruction=REVISION_INSTRUCTION)
    searcher = _searcher(policy, SearchLimits(max_solution_tokens=48), seed=2)
    problem = problems[2]
    result = await searcher.solve(problem, Revisions(n=3, chain_length="n", context=4, selection="majority"))
    plain = policy.encode_problem(problem.problem)
    revised = _revision_prompts(result)
    assert len(revised) == 2
    user = "<|start_header_id|>user<|end_header_id|>"
    for node, prompt in revised:
        earlier = node.parent.attempts()
        assert list(prompt) == policy.encode_revision(problem.problem, earlier)
        assert list(prompt[: len(plain)]) == plain
        text = policy.tokenizer.decode(prompt)
        assert text.count(REVISION_INSTRUCTION) == len(earlier) and text.count(user) == 1 + len(earlier)
        assert text.endswith(REVISION_INSTRUCTION + "<|eot_id|>" + ASSISTANT + "\n\n")
    assert result.usage.prompt_tokens == len(plain) + sum(len(prompt) for _, prompt in revised)
