"""Sequential revisions: chain prompts, hierarchical selection and budgets, exactly, on scripted backends.

The scripted world writes attempt k of chain c as "c{c}k{k}" plus an answer and a PRM tag
chosen by the test; the scripted policy's revision prompt lists the earlier attempts on
"P: " lines, which the script sees as `call.previous`, so each prompt's context is
checked attempt by attempt.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import pytest

from ttsearch.core.search import SearchLimits
from ttsearch.core.searcher import Searcher
from ttsearch.strategies.catalog import build_strategy
from ttsearch.strategies.revisions import Revisions
from ttsearch.testing.scripted import EOS, ScriptCall, ScriptedPolicy, ScriptedVerifier, decode

WIDE = SearchLimits(max_solution_tokens=10_000)
NAME = re.compile(r"^(c\d+k\d+)")

# (chain, attempt) -> (answer, PRM score of the attempt's last step)
Plan = Mapping[tuple[int, int], tuple[str, float]]


def world(plan: Plan, seen: dict[str, tuple[str, ...]]) -> Callable[[ScriptCall], str]:
    """Attempt k of a chain follows the last attempt in its prompt; first attempts take their
    chain from a counter (sent in chain order)."""
    firsts = iter(range(1000))

    def script(call: ScriptCall) -> str:
        if call.previous:
            last = NAME.match(call.previous[-1]).group(1)  # type: ignore[union-attr]
            chain, k = (int(x) for x in last[1:].split("k"))
            k += 1
        else:
            chain, k = next(firsts), 1
        name = f"c{chain}k{k}"
        seen[name] = call.previous
        answer, score = plan.get((chain, k), ("0", 0.5))
        return f"{name} step [p=0.9]\n\n{name} so \\boxed{{{answer}}} [p={score}]{EOS}"

    return script


def searcher(plan: Plan, seen: dict[str, tuple[str, ...]], **kwargs) -> Searcher:  # type: ignore[no-untyped-def]
    policy = ScriptedPolicy(world(plan, seen), max_model_len=kwargs.pop("max_model_len", 100_000))
    return Searcher(policy, ScriptedVerifier(), limits=kwargs.pop("limits", WIDE), **kwargs)


async def test_each_prompt_carries_the_chains_last_context_attempts_in_order() -> None:
    seen: dict[str, tuple[str, ...]] = {}
    async with searcher({}, seen, seed=0) as s:
        await s.solve("Q", Revisions(n=10, chain_length=5, context=2, reduction="last"))
    assert sorted(seen) == [f"c{c}k{k}" for c in range(2) for k in range(1, 6)]
    for c in range(2):
        names = [f"c{c}k{k}" for k in range(1, 6)]
        for k in range(1, 6):
            previous = seen[names[k - 1]]
            # the whole text of each earlier attempt, oldest first, at most `context` of them
            assert [NAME.match(p).group(1) for p in previous] == names[max(0, k - 3) : k - 1]  # type: ignore[union-attr]
            assert all(p.endswith(" [p=0.5]") for p in previous)


async def test_budget_is_n_attempts_each_one_request_with_its_prompt_counted() -> None:
    seen: dict[str, tuple[str, ...]] = {}
    async with searcher({}, seen, seed=0) as s:
        result = await s.solve("Q", Revisions(n=12, chain_length=4, context=4))
        policy = s.policy
    assert isinstance(policy, ScriptedPolicy)
    assert [r.n for r in policy.requests] == [1] * 12
    assert all(not r.stop for r in policy.requests), "an attempt is sampled to its end"
    assert result.usage.policy_samples == 12 and result.usage.policy_calls == 12
    assert result.usage.prompt_tokens == sum(len(r.prompt_token_ids) for r in policy.requests)
    # A revision's prompt holds the earlier attempts: it grows along the chain.
    longest_first = max(len(r.prompt_token_ids) for r in policy.requests if "\nP: " not in decode(r.prompt_token_ids))
    assert max(len(r.prompt_token_ids) for r in policy.requests) > 3 * longest_first
    assert len(result.candidates) == 3  # one per chain


async def test_an_attempt_is_a_solution_of_its_own_scored_alone() -> None:
    seen: dict[str, tuple[str, ...]] = {}
    async with searcher({}, seen, seed=0, keep_trees=True) as s:
        result = await s.solve("Q", Revisions(n=2, chain_length=2, context=4, reduction="min"))
        verifier = s.verifier
    assert isinstance(verifier, ScriptedVerifier)
    assert result.tree is not None
    first, second = sorted(result.tree.finished, key=lambda node: node.depth)
    assert second.parent is first and first.state == "finished", "the revised attempt stays a candidate"
    assert second.text.startswith("c0k2") and len(second.steps) == 2 == len(second.step_scores)
    assert second.num_generated_tokens == len(second.segment_token_ids)
    assert second.attempts() == [first.text, second.text]
    # the PRM saw each attempt's own two steps, from the first
    assert sorted((steps[0][:4], first_step) for _, steps, first_step in verifier.calls) == [("c0k1", 0), ("c0k2", 0)]


@pytest.mark.parametrize(
    ("within", "across", "want_chains", "want_answer"),
    [
        # chain 0: "1" (0.9), then "2" (0.3) twice; chain 1: "2" (0.4) three times.
        # weighted within: chain 0 keeps "1" (0.9 > 0.6); across: "1" 0.9 > "2" 0.4
        ("weighted", "weighted", ["1", "2"], "1"),
        # majority within: chain 0 keeps "2" (2 votes of 3); across: "2" twice
        ("majority", "majority", ["2", "2"], "2"),
        # naive within: the best single attempt; across: the best chain candidate
        ("naive", "naive", ["1", "2"], "1"),
    ],
)
async def test_the_answer_is_chosen_within_each_chain_then_across(
    within: str, across: str, want_chains: list[str], want_answer: str
) -> None:
    plan = {
        (0, 1): ("1", 0.9),
        (0, 2): ("2", 0.3),
        (0, 3): ("2", 0.3),
        (1, 1): ("2", 0.4),
        (1, 2): ("2", 0.4),
        (1, 3): ("2", 0.4),
    }
    strategy = Revisions(n=6, chain_length=3, selection_within=within, selection=across, reduction="last")  # type: ignore[arg-type]
    seen: dict[str, tuple[str, ...]] = {}
    async with searcher(plan, seen, seed=0) as s:
        result = await s.solve("Q", strategy)
    assert [c.answer for c in result.candidates] == want_chains
    assert result.answer == want_answer
    # a chain's candidate: the best scored attempt with the chosen answer (ties: the earlier)
    want_texts = ["c0k2", "c1k1"] if within == "majority" else ["c0k1", "c1k1"]
    assert [c.text[:4] for c in result.candidates] == want_texts


async def test_old_attempts_leave_the_prompt_when_the_context_is_short() -> None:
    seen: dict[str, tuple[str, ...]] = {}
    limits = SearchLimits(max_solution_tokens=60)
    # an attempt is 44 characters (tokens): a prompt with 2 earlier attempts (105 tokens)
    # + a solution's 60 fits in 180, one with 3 (153 + 60) does not
    async with searcher({}, seen, seed=0, limits=limits, max_model_len=180) as s:
        result = await s.solve("Q", Revisions(n=5, chain_length=5, context=4))
    assert [len(seen[f"c0k{k}"]) for k in range(1, 6)] == [0, 1, 2, 2, 2]
    assert [NAME.match(p).group(1) for p in seen["c0k5"]] == ["c0k3", "c0k4"]  # type: ignore[union-attr]
    assert result.ok and all(c.finish == "eos" for c in result.candidates)


def test_chain_length_one_is_n_independent_attempts_and_n_is_one_chain() -> None:
    strategy = Revisions(n=4, chain_length=1)
    assert strategy.chains == 4 and strategy.live_prefixes == 4
    sequential = build_strategy({"revisions": Revisions}, "revisions", n=8, chain_length="n")
    assert isinstance(sequential, Revisions) and sequential.chains == 1 and sequential.length == 8


async def test_one_sequential_chain_revises_n_times() -> None:
    seen: dict[str, tuple[str, ...]] = {}
    async with searcher({}, seen, seed=0) as s:
        result = await s.solve("Q", Revisions(n=6, chain_length="n", context=4))
    assert sorted(seen) == [f"c0k{k}" for k in range(1, 7)]
    assert len(result.candidates) == 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"n": 6, "chain_length": 4}, "chain_length must be >= 1 and divide n, got n=6, chain_length=4"),
        ({"n": 4, "chain_length": 0}, "chain_length must be >= 1"),
        ({"n": 4, "chain_length": "all"}, "chain_length must be >= 1 and divide n"),
        ({"n": 4, "context": 0}, "context must be >= 1"),
        ({"n": 0}, "n must be >= 1"),
        ({"n": 4, "selection_within": "best"}, "selection_within must be one of"),
        ({"n": 4, "temperature": -1.0}, "temperature must be >= 0"),
    ],
)
def test_bad_parameters_are_named(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        build_strategy({"revisions": Revisions}, "revisions", **options)


class _NoRevisions:
    """A policy without `encode_revision` (any `Policy` that predates revisions)."""

    def __init__(self) -> None:
        self.inner = ScriptedPolicy(lambda call: EOS)

    @property
    def max_model_len(self) -> int:
        return 1000

    def encode_problem(self, problem: str) -> list[int]:
        return self.inner.encode_problem(problem)

    async def sample(self, request):  # type: ignore[no-untyped-def]
        return await self.inner.sample(request)

    async def close(self) -> None:
        await self.inner.close()


async def test_a_policy_that_cannot_render_revisions_is_refused_before_any_request() -> None:
    policy = _NoRevisions()
    async with Searcher(policy, ScriptedVerifier(), limits=WIDE) as s:  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="cannot render revision prompts"):
            await s.solve("Q", Revisions(n=2, chain_length=2))
    assert policy.inner.requests == []
