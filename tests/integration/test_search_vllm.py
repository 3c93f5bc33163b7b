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
