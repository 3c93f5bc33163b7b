"""Exact semantics of particle filtering, particle Gibbs and entropic particle filtering, on
scripted backends: known PRM scores give known resampling counts under a fixed seed."""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections import Counter
from collections.abc import Callable

import pytest

from tests.engine.helpers import depth_of
from ttsearch.core.backend import SampleRequest
from ttsearch.core.search import SearchLimits
from ttsearch.core.searcher import Searcher
from ttsearch.core.tree import Node, SearchTree
from ttsearch.strategies.catalog import build_strategy
from ttsearch.strategies.particle_filtering import (
    EntropicParticleFiltering,
    ParticleFiltering,
    ParticleGibbs,
    effective_sample_size,
    normalized_entropy,
    softmax,
)
from ttsearch.testing.scripted import EOS, ScriptCall, ScriptedPolicy, ScriptedVerifier, decode, score_from_tag

Rule = Callable[[int, int, str], object]  # (depth, sample index, text so far) -> ...


def particles_script(
    score: Rule,
    *,
    final: Rule = lambda d, i, text: d >= 2,
    answer: Rule = lambda d, i, text: "7",
) -> Callable[[ScriptCall], str]:
    """Step d of sample i reads "d{d}i{i} [p=score]"; a step where `final` holds adds a boxed
    answer and EOS (so particles can finish at any depth). Sampling to completion (no stop
    string) writes the remaining steps up to the final one."""

    def script(call: ScriptCall) -> str:
        text, out = call.text, []
        while True:
            d, i = depth_of(text), call.index
            p = score(d, i, text)
            tag = "" if p is None else f" [p={p:.6f}]"
            if final(d, i, text):
                out.append(f"d{d}i{i}{tag} \\boxed{{{answer(d, i, text)}}}{EOS}")
                return "".join(out)
            out.append(f"d{d}i{i}{tag}\n\n")
            if call.request.stop:
                return "".join(out)
            text += out[-1]

    return script


def searcher_for(script, verifier=score_from_tag, *, limits=None, delay=None) -> Searcher:
    policy = ScriptedPolicy(script, max_model_len=100_000, delay=delay)
    limits = limits or SearchLimits(max_solution_tokens=10_000)
    return Searcher(policy, ScriptedVerifier(verifier), limits=limits)


def state_of(tree: SearchTree):
    (state,) = tree.strategy_state.values()
    return state


def node_by_id(tree: SearchTree, node_id: int) -> Node:
    (node,) = [n for n in tree.nodes() if n.id == node_id]
    return node


def _text(request: SampleRequest) -> str:
    """The solution text a request continues (its prompt without the problem)."""
    return decode(request.prompt_token_ids).partition("\nA: ")[2]


def samples_per_round(searcher: Searcher, rounds: int) -> list[int]:
    """Samples requested from particles of depth 0, 1, ...: one round each."""
    requests = searcher.policy.requests
    return [sum(r.n for r in requests if depth_of(_text(r)) == d) for d in range(rounds)]


# -- one round, exactly --------------------------------------------------------------------


FIRST = [0.1, 0.3, 0.9, 0.2]  # first-step scores by sample index


async def test_known_scores_give_known_resampling_counts_under_a_fixed_seed() -> None:
    # Round 1: 4 first steps scored FIRST; weights softmax(score / T) with T = 0.25.
    script = particles_script(lambda d, i, text: FIRST[i] if d == 0 else 0.5)
    searcher = searcher_for(script)
    strategy = ParticleFiltering(n=4, temperature_resample=0.25)
    result = await searcher.solve("q", strategy)
    tree = result.tree
    first = sorted(tree.root.children, key=lambda n: n.address)
    # The probabilities, by hand.
    exps = [math.exp(s / 0.25) for s in FIRST]
    expected = [e / sum(exps) for e in exps]
    assert strategy.resampling_probabilities([strategy.log_weight(n) for n in first], step=1, draws=4) == pytest.approx(
        expected
    )
    # The draw: multinomial from the problem's seeded generator for (iteration 0, round 1).
    draw = tree.random("resample", 0, 1).choices(range(4), weights=expected, k=4)
    copies = Counter(draw)
    assert copies == Counter({2: 3, 0: 1})  # seed 0, known: sample 2 (0.9) three times, sample 0 once
    requests = searcher.policy.requests
    assert requests[0].n == 4
    round2 = [r for r in requests if depth_of(_text(r)) == 1]
    # one request per drawn particle with n = its copies, in tree order
    assert [r.n for r in round2] == [copies[i] for i in sorted(copies)]
    assert [r.prompt_token_ids for r in round2] == [tuple(first[i].token_ids) for i in sorted(copies)]
    assert [n.state for n in first] == ["pruned" if i not in copies else "expanded" for i in range(4)]
    (_, step, drawn), *_ = state_of(tree).draws
    assert step == 1 and drawn == {first[i]: c for i, c in copies.items()}
    assert sum(r.n for r in round2) == 4  # N particles, N samples per round


async def test_sharp_logit_weights_put_every_particle_on_the_best() -> None:
    # its_hub's weighting: logit(score), so 1.0 vs 0.0 is odds 1e7 : 1e-7 after clipping.
    script = particles_script(lambda d, i, text: [0.0, 0.0, 1.0, 0.0][i] if d == 0 else 0.5)
    for seed in range(3):
        searcher = searcher_for(script)
        result = await searcher.solve("q", ParticleFiltering(n=4, weighting="logit"), seed=seed)
        assert [r.n for r in searcher.policy.requests[:2]] == [4, 4]
        best = sorted(result.tree.root.children, key=lambda n: n.address)[2]
        assert searcher.policy.requests[1].prompt_token_ids == tuple(best.token_ids)
        assert all(c.text.startswith("d0i2") for c in result.candidates)


def test_log_weights_of_both_weightings() -> None:
    node = Node(
        id=1,
        parent=None,
        depth=1,
        segment_token_ids=(),
        segment_text="",
        steps=("a", "b"),
        step_scores=(0.2, 0.8),
        finish="step",
    )
    assert ParticleFiltering(n=2).log_weight(node) == pytest.approx(0.8)  # last, T = 1
    assert ParticleFiltering(n=2, temperature_resample=0.5).log_weight(node) == pytest.approx(1.6)
    assert ParticleFiltering(n=2, reduction="min").log_weight(node) == pytest.approx(0.2)
    assert ParticleFiltering(n=2, weighting="logit", temperature_resample=2).log_weight(node) == pytest.approx(
        math.log(4) / 2
    )


# -- finished particles --------------------------------------------------------------------


def _one_finishes_first(good: float):
    """Sample 0 of the first round finishes at once with score `good`; the rest score 0.01."""

    def score(d: int, i: int, text: str) -> float:
        return (good if i == 0 else 0.01) if d == 0 else 0.5

    return particles_script(score, final=lambda d, i, text: (d == 0 and i == 0) or d >= 3)


async def test_finished_particles_are_resampled_with_their_final_weight_by_default() -> None:
    # its_hub: a finished particle stays in the pool. With logit weights 0.99999 vs 0.01 it
    # takes every slot: the search ends after one round with 4 copies of it.
    searcher = searcher_for(_one_finishes_first(0.99999))
    result = await searcher.solve("q", ParticleFiltering(n=4, weighting="logit"))
    assert [r.n for r in searcher.policy.requests] == [4]
    assert len(result.candidates) == 4 and len({c.node_id for c in result.candidates}) == 1
    assert result.answer == "7" and all(c.finish == "eos" for c in result.candidates)
    assert [n.state for n in sorted(result.tree.root.children, key=lambda n: n.address)] == [
        "finished",
        "pruned",
        "pruned",
        "pruned",
    ]


async def test_without_resample_finished_a_finished_particle_keeps_one_slot() -> None:
    searcher = searcher_for(_one_finishes_first(0.99999))
    strategy = ParticleFiltering(n=4, weighting="logit", resample_finished=False)
    result = await searcher.solve("q", strategy)
    # 3 slots left for the 3 open particles, every round, until they finish at depth 4
    assert samples_per_round(searcher, 4) == [4, 3, 3, 3]
    assert len(result.candidates) == 4 and len({c.node_id for c in result.candidates}) == 4
    depths = sorted(node_by_id(result.tree, c.node_id).depth for c in result.candidates)
    assert depths == [1, 4, 4, 4]  # particles that finished at different depths


def _sample_0_finishes_at_depth_1():
    # Every expansion's sample 0 at depth 1 finishes there (a particle of depth 2); the
    # others go on to depth 4. Finishing steps score 0.2, the others 0.5.
    return particles_script(
        lambda d, i, text: 0.2 if (d == 1 and i == 0) else 0.5,
        final=lambda d, i, text: (d == 1 and i == 0) or d >= 3,
    )


async def test_particles_finishing_at_different_depths_keep_their_slots() -> None:
    searcher = searcher_for(_sample_0_finishes_at_depth_1())
    result = await searcher.solve("q", ParticleFiltering(n=6, resample_finished=False))
    tree = result.tree
    assert len(result.candidates) == 6 == len({c.node_id for c in result.candidates})
    depths = Counter(node_by_id(tree, c.node_id).depth for c in result.candidates)
    assert set(depths) == {2, 4}
    per_round = samples_per_round(searcher, 4)
    # round 2 expands every drawn particle once per copy; each expansion's sample 0 finishes
    # and keeps its slot, so rounds 3 and 4 sample 6 minus those
    assert per_round[:2] == [6, 6] and per_round[2] == per_round[3] == 6 - depths[2]
    assert depths[2] == len([r for r in searcher.policy.requests if depth_of(_text(r)) == 1])


async def test_finished_particles_from_earlier_depths_stay_in_the_pool() -> None:
    # its_hub's default: at every round the pool is this round's children plus the copies
    # of particles that finished earlier, each weighted by its (final) reward; N drawn.
    searcher = searcher_for(_sample_0_finishes_at_depth_1())
    result = await searcher.solve("q", ParticleFiltering(n=6))
    tree = result.tree
    draws = state_of(tree).draws
    carried: list[Node] = []  # finished copies drawn in the previous round
    mixed = 0
    for _, step, drawn in draws:
        pool = sorted([n for n in tree.nodes() if n.depth == step] + carried, key=lambda n: n.address)
        weights = softmax([n.step_scores[-1] for n in pool])  # 0.2 for the depth-2 finishes
        draw = tree.random("resample", 0, step).choices(range(len(pool)), weights=weights, k=6)
        assert drawn == dict(Counter(pool[i] for i in draw))
        mixed += any(n.depth < step for n in pool)
        carried = [n for n, c in drawn.items() if n.is_terminal for _ in range(c)]
    assert mixed  # some round's pool held a particle that finished at an earlier depth
    assert sorted(c.node_id for c in result.candidates) == sorted(n.id for n in carried)
    spent = sum(c for _, _, d in draws for n, c in d.items() if not n.is_terminal)
    assert result.usage.policy_samples == 6 + spent  # a sample per open copy, none for finished


@pytest.mark.parametrize("resample_finished", [True, False])
async def test_a_frontier_where_every_particle_finished_at_once(resample_finished: bool) -> None:
    answers = ["1", "2", "1", "3"]
    script = particles_script(
        lambda d, i, text: [0.6, 0.9, 0.6, 0.2][i], final=lambda d, i, text: True, answer=lambda d, i, t: answers[i]
    )
    searcher = searcher_for(script)
    result = await searcher.solve(
        "q", ParticleFiltering(n=4, resample_finished=resample_finished, selection="weighted")
    )
    assert [r.n for r in searcher.policy.requests] == [4]  # nothing open: no second round
    assert len(result.candidates) == 4
    if not resample_finished:
        # all four, once each: weighted vote "1" (0.6 + 0.6) beats "2" (0.9); argmax is "2"
        assert [c.answer for c in result.candidates] == answers
        assert result.answer == "1" and result.select("naive") == "2"
    else:  # the last resampling decides the copies (its_hub resamples once more at the end)
        tree = result.tree
        probs = softmax([0.6, 0.9, 0.6, 0.2])
        draw = tree.random("resample", 0, 1).choices(range(4), weights=probs, k=4)
        assert sorted(c.answer for c in result.candidates) == sorted(answers[i] for i in draw)


async def test_a_truncated_step_finishes_its_particle_and_holds_its_slot() -> None:
    # Sample 1's first step runs past max_step_tokens: finish "length", terminal. It holds
    # one slot (resample_finished=False), so later rounds sample N - 1, never more.
    def script(call: ScriptCall) -> str:
        if call.text == "" and call.index == 1:
            return "x" * 200 + " [p=0.5]\n\n"
        return particles_script(lambda d, i, text: 0.5, final=lambda d, i, text: d >= 2)(call)

    limits = SearchLimits(max_solution_tokens=10_000, max_step_tokens=100)
    searcher = searcher_for(script, limits=limits)
    result = await searcher.solve("q", ParticleFiltering(n=4, resample_finished=False))
    assert samples_per_round(searcher, 3) == [4, 3, 3]
    assert result.usage.policy_samples == 10 == sum(r.n for r in searcher.policy.requests)
    finishes = Counter(c.finish for c in result.candidates)
    assert finishes == Counter({"eos": 3, "length": 1})
    (truncated,) = [c for c in result.candidates if c.finish == "length"]
    assert truncated.num_tokens == 100


async def test_a_truncated_step_is_resampled_like_any_finished_particle() -> None:
    # Default (its_hub): the truncated particle competes with its score; a score of ~0
    # under logit weights drops it at once and its slot goes to the open particles.
    def script(call: ScriptCall) -> str:
        if call.text == "" and call.index == 1:
            return "[p=0.000001] " + "x" * 200
        return particles_script(lambda d, i, text: 0.5, final=lambda d, i, text: d >= 2)(call)

    limits = SearchLimits(max_solution_tokens=10_000, max_step_tokens=100)
    searcher = searcher_for(script, limits=limits)
    result = await searcher.solve("q", ParticleFiltering(n=4, weighting="logit"))
    assert samples_per_round(searcher, 3) == [4, 4, 4]
    assert all(c.finish == "eos" for c in result.candidates) and len(result.candidates) == 4


async def test_a_particle_the_prm_cannot_take_is_dropped_and_its_slot_refilled() -> None:
    # Sample 1's first step is too long for the PRM: the engine drops it (not a candidate);
    # the 3 others are resampled into all 4 slots.
    def script(call: ScriptCall) -> str:
        if call.text == "" and call.index == 1:
            return "y" * 300 + "\n\n"
        return particles_script(lambda d, i, text: 0.5, final=lambda d, i, text: d >= 1)(call)

    policy = ScriptedPolicy(script, max_model_len=100_000)
    verifier = ScriptedVerifier(max_input_chars=200)
    searcher = Searcher(policy, verifier, limits=SearchLimits(max_solution_tokens=10_000))
    result = await searcher.solve("q", ParticleFiltering(n=4))
    assert samples_per_round(searcher, 2) == [4, 4]
    assert len(result.candidates) == 4 and not any(c.text.startswith("y") for c in result.candidates)


# -- broken weights ------------------------------------------------------------------------


@pytest.mark.parametrize("weighting", ["score", "logit"])
async def test_all_zero_scores_resample_uniformly(weighting: str) -> None:
    script = particles_script(lambda d, i, text: None)
    searcher = searcher_for(script, verifier=lambda q, steps: 0.0)
    strategy = ParticleFiltering(n=4, weighting=weighting)
    result = await searcher.solve("q", strategy)
    assert result.ok and len(result.candidates) == 4
    first = sorted(result.tree.root.children, key=lambda n: n.address)
    probs = strategy.resampling_probabilities([strategy.log_weight(n) for n in first], step=1, draws=4)
    assert probs == pytest.approx([0.25] * 4)
    draw = result.tree.random("resample", 0, 1).choices(range(4), weights=[0.25] * 4, k=4)
    (_, _, drawn), *_ = state_of(result.tree).draws
    assert drawn == {first[i]: c for i, c in Counter(draw).items()}


async def test_nan_scores_get_weight_zero_and_never_crash() -> None:
    # Sample 0's lineage is scored NaN by a broken PRM: it is never drawn while others are
    # valid; its candidate score is 0.0 (the worst), not an exception.
    def verifier(problem: str, steps: tuple[str, ...]) -> float:
        return math.nan if steps[0].startswith("d0i0") else 0.5

    script = particles_script(lambda d, i, text: None, final=lambda d, i, text: d >= 1)
    for seed in range(5):
        searcher = searcher_for(script, verifier=verifier)
        result = await searcher.solve("q", ParticleFiltering(n=4), seed=seed)
        assert result.ok
        assert not any(c.text.startswith("d0i0") for c in result.candidates)
        nan_node = sorted(result.tree.root.children, key=lambda n: n.address)[0]
        assert nan_node.state == "pruned"
    assert ParticleFiltering(n=4).score(nan_node) == 0.0


async def test_all_nan_scores_fall_back_to_uniform_weights() -> None:
    script = particles_script(lambda d, i, text: None)
    searcher = searcher_for(script, verifier=lambda q, steps: math.nan)
    result = await searcher.solve("q", ParticleFiltering(n=4, selection="weighted"))
    assert result.ok and len(result.candidates) == 4
    assert all(c.score == 0.0 for c in result.candidates) and result.answer == "7"


def test_softmax_edge_cases() -> None:
    assert softmax([]) == []
    assert softmax([-math.inf, -math.inf]) == [0.5, 0.5]
    assert softmax([math.nan, math.nan, math.nan]) == pytest.approx([1 / 3] * 3)
    assert softmax([math.nan, 0.0, -math.inf]) == [0.0, 1.0, 0.0]
    assert softmax([math.inf, 1.0, math.inf]) == [0.5, 0.0, 0.5]
    assert softmax([1000.0, 0.0]) == pytest.approx([1.0, 0.0])


def test_systematic_resampling_takes_evenly_spaced_positions() -> None:
    class Half(random.Random):
        def random(self) -> float:
            return 0.5

    pf = ParticleFiltering(n=4, resampling="systematic")
    # positions 0.125, 0.375, 0.625, 0.875 over cumulative 0.5, 0.75, 1.0
    assert pf.draw([0.5, 0.25, 0.25], 4, Half()) == [0, 0, 1, 2]
    # a zero-weight particle is never drawn; float sums just under 1 do not overrun
    assert pf.draw([0.0, 0.3, 0.0, 0.7 - 1e-12], 4, Half()) == [1, 3, 3, 3]


# -- max depth -----------------------------------------------------------------------------


async def test_the_round_reaching_max_depth_samples_to_completion() -> None:
    script = particles_script(lambda d, i, text: 0.5, final=lambda d, i, text: d >= 50)
    searcher = searcher_for(script)
    result = await searcher.solve("q", ParticleFiltering(n=3, max_depth=3))
    requests = searcher.policy.requests
    assert all(r.stop == ("\n\n",) for r in requests if depth_of(_text(r)) < 2)
    assert all(r.stop == () for r in requests if depth_of(_text(r)) == 2)
    assert max(n.depth for n in result.tree.nodes()) == 3
    assert len(result.candidates) == 3 and all(c.finish == "eos" for c in result.candidates)


# -- particle Gibbs ------------------------------------------------------------------------


def _gibbs_script(final_score: float):
    # Steps score 0.5; the answer step (depth 2) scores `final_score`; answers name the path.
    return particles_script(
        lambda d, i, text: final_score if d >= 2 else 0.5,
        answer=lambda d, i, text: "".join(p.split()[0] for p in text.split("\n\n") if p) + f"d{d}i{i}",
    )


async def test_particle_gibbs_keeps_its_reference_particle() -> None:
    searcher = searcher_for(_gibbs_script(0.5))
    strategy = ParticleGibbs(n=4, iterations=3)
    result = await searcher.solve("q", strategy)
    tree = result.tree
    state = state_of(tree)
    root_prompt = tuple(tree.root.token_ids)
    # iteration 1: N free particles; then N - 1 free ones beside the reference
    assert [r.n for r in searcher.policy.requests if r.prompt_token_ids == root_prompt] == [4, 3, 3]
    reference = state.reference
    assert reference is not None and reference.is_terminal
    # the reference holds a slot in the final set, which is the last iteration's particles
    ids = [c.node_id for c in result.candidates]
    assert reference.id in ids and len(ids) == 4
    iteration_3_first = max(
        (n for n in tree.root.children), key=lambda n: n.address
    )  # the last first-step node: iteration 3 began after it
    assert reference.id < iteration_3_first.id  # kept from an earlier iteration
    assert all(nid == reference.id or nid > iteration_3_first.id for nid in ids)
    # the next reference was drawn from iteration 2's final set by its final weight
    assert {it for it, _, _ in state.draws} == {0, 1, 2}
    assert strategy.generation_budget == 12


@pytest.mark.parametrize("reference_weight", ["partial", "final"])
async def test_the_reference_prefix_competes_with_its_partial_or_final_weight(reference_weight: str) -> None:
    # Steps score 0.5, answers 0.99999 (logit: odds 1e5). In iteration 2, round 1, the
    # reference enters the pool as its depth-1 prefix: weighted by that prefix's 0.5
    # (partial: uniform over 3 entries) or by its final 0.99999 (final: takes both draws).
    searcher = searcher_for(_gibbs_script(0.99999))
    strategy = ParticleGibbs(n=3, iterations=2, weighting="logit", reference_weight=reference_weight)
    result = await searcher.solve("q", strategy)
    tree = result.tree
    state = state_of(tree)
    reference = state.reference
    prefix = reference.path()[1]
    (drawn,) = [d for it, step, d in state.draws if it == 1 and step == 1]
    if reference_weight == "final":
        assert drawn == {prefix: 2}
        # a free particle that draws the reference continues from the prefix's node
        assert any(r.prompt_token_ids == tuple(prefix.token_ids) and r.n == 2 for r in searcher.policy.requests)
    else:
        pool = sorted((n for n in tree.root.children if n.id > reference.id), key=lambda n: n.address) + [prefix]
        draw = tree.random("resample", 1, 1).choices(range(3), weights=[1 / 3] * 3, k=2)
        expected: Counter[Node] = Counter(pool[i] for i in draw)
        assert drawn == dict(expected)
    assert reference.id in [c.node_id for c in result.candidates]


async def test_the_next_reference_is_drawn_from_the_final_set_by_final_weight() -> None:
    # Answers score by their last sample index (0.2, 0.5, 0.8): after iteration 1 the
    # reference is drawn from the final particles (copies included) with softmax(reward).
    script = particles_script(lambda d, i, text: [0.2, 0.5, 0.8, 0.5][i] if d >= 2 else 0.5)
    searcher = searcher_for(script)
    result = await searcher.solve("q", ParticleGibbs(n=4, iterations=2))
    tree = result.tree
    state = state_of(tree)
    (last_round,) = [
        d for it, step, d in state.draws if it == 0 and step == max(s for i, s, _ in state.draws if i == 0)
    ]
    final = sorted((n for n, c in last_round.items() for _ in range(c)), key=lambda n: n.address)
    assert all(n.is_terminal for n in final) and len(final) == 4
    weights = softmax([n.step_scores[-1] for n in final])
    (index,) = tree.random("reference", 0).choices(range(4), weights=weights, k=1)
    assert state.reference is final[index]


def test_particle_gibbs_budget_is_n_times_iterations() -> None:
    assert ParticleFiltering(n=8).generation_budget == 8
    assert ParticleGibbs(n=8, iterations=4).generation_budget == 32
    assert ParticleGibbs(n=8, iterations=4).live_prefixes == 8


# -- entropic particle filtering -----------------------------------------------------------


def test_entropic_annealing_flattens_collapsed_weights_early() -> None:
    epf = EntropicParticleFiltering(n=4, max_depth=10, weighting="logit")
    scores = [0.99, 0.01, 0.01, 0.01]
    log_weights = [math.log(s / (1 - s)) for s in scores]
    plain = softmax(log_weights)
    assert ParticleFiltering(n=4, weighting="logit").resampling_probabilities(log_weights, step=1, draws=4) == plain
    # ESS ratio of the plain weights, by hand
    ess = 1 / sum(max(p, 1e-7) ** 2 for p in plain)
    ratio = ess / 4
    assert ratio < 0.5
    # step 1 of 10: progress 0.1, temperature (1 - 0.1) / ratio
    temperature = 0.9 / ratio
    assert epf.annealing_temperature(plain, 1, 4) == pytest.approx(temperature)
    annealed = epf.resampling_probabilities(log_weights, step=1, draws=4)
    assert annealed == pytest.approx(softmax([w / temperature for w in log_weights]))
    assert effective_sample_size(annealed) > effective_sample_size(plain)
    # past the early phase (progress 0.5) or with healthy weights: plain
    assert epf.resampling_probabilities(log_weights, step=5, draws=4) == plain
    assert epf.annealing_temperature([0.25] * 4, 1, 4) == 1.0
    assert epf.annealing_temperature(plain, 1, 1) == 1.0  # one draw: nothing to anneal


def test_entropic_annealing_entropy_and_base_schedules() -> None:
    plain = softmax([9.0, 0.0, 0.0, 0.0])
    h = normalized_entropy(plain)
    entropy = EntropicParticleFiltering(n=4, max_depth=10, annealing="entropy")
    assert entropy.annealing_temperature(plain, 2, 4) == pytest.approx(1 / (h + (1 - h) * 0.2))
    base = EntropicParticleFiltering(n=4, max_depth=10, annealing="base")
    assert base.annealing_temperature(plain, 2, 4) == pytest.approx(1.8)
    assert normalized_entropy([0.25] * 4) == pytest.approx(1.0)


async def test_entropic_particle_filtering_draws_from_the_annealed_weights() -> None:
    # Same scores, same seed: PF and ePF resample from different probabilities, exactly as
    # computed by hand; ePF keeps more distinct particles (systematic, flatter weights).
    scores = [0.97, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05]
    script = particles_script(lambda d, i, text: scores[i] if d == 0 else 0.5, final=lambda d, i, t: d >= 3)
    distinct = {}
    for strategy in (
        ParticleFiltering(n=8, weighting="logit", max_depth=10),
        EntropicParticleFiltering(n=8, weighting="logit", max_depth=10),
    ):
        searcher = searcher_for(script)
        result = await searcher.solve("q", strategy)
        tree = result.tree
        log_weights = [math.log(s / (1 - s)) for s in scores]
        probs = softmax(log_weights)
        if isinstance(strategy, EntropicParticleFiltering):
            ratio = 1 / sum(max(p, 1e-7) ** 2 for p in probs) / 8
            probs = softmax([w * ratio / 0.9 for w in log_weights])
        first = sorted(tree.root.children, key=lambda n: n.address)
        draw = strategy.draw(probs, 8, tree.random("resample", 0, 1))
        (_, _, drawn), *_ = state_of(tree).draws
        assert drawn == {first[i]: c for i, c in Counter(draw).items()}
        distinct[strategy.name] = len(drawn)
    assert distinct["EntropicParticleFiltering"] > distinct["ParticleFiltering"]


# -- reproducibility and concurrency -------------------------------------------------------


def _noisy_script():
    # Step scores drawn from the request's seeded generator: the seed changes everything.
    def script(call: ScriptCall) -> str:
        d = depth_of(call.text)
        p = call.rng.random()
        if d >= 3:
            return f"d{d}i{call.index} [p={p:.4f}] \\boxed{{{call.index}}}{EOS}"
        return f"d{d}i{call.index} [p={p:.4f}]\n\n"

    return script


def _draws(tree: SearchTree) -> list[tuple[int, int, dict[tuple, int]]]:
    """The draws by tree position (node ids depend on completion order; addresses do not)."""
    return [(it, step, {n.address: c for n, c in drawn.items()}) for it, step, drawn in state_of(tree).draws]


def _fingerprint(searcher: Searcher, result) -> tuple:
    requests = sorted((r.prompt_token_ids, r.n) for r in searcher.policy.requests)
    return requests, tuple(c.text for c in result.candidates), str(_draws(result.tree))


@pytest.mark.parametrize(
    "make",
    [
        lambda: ParticleFiltering(n=6),
        lambda: ParticleGibbs(n=4, iterations=2),
        lambda: EntropicParticleFiltering(n=6, max_depth=8),
    ],
    ids=["pf", "pg", "epf"],
)
async def test_same_seed_same_search_different_seed_different_search(make) -> None:
    runs = {}
    for seed in (0, 0, 1):
        searcher = searcher_for(_noisy_script())
        result = await searcher.solve("q", make(), seed=seed)
        runs.setdefault(seed, []).append(_fingerprint(searcher, result))
    assert runs[0][0] == runs[0][1]
    assert runs[0][0] != runs[1][0]
    assert runs[0][0][2] != runs[1][0][2]  # the draws themselves differ


async def test_reproducible_under_random_latencies() -> None:
    outcomes = set()
    for pattern in range(6):
        rng = random.Random(pattern)

        async def delay(request: SampleRequest, rng: random.Random = rng) -> None:
            await asyncio.sleep(rng.random() * 0.002)

        searcher = searcher_for(_noisy_script(), delay=delay)
        result = await searcher.solve("q", ParticleFiltering(n=6))
        outcomes.add((tuple(c.text for c in result.candidates), str(_draws(result.tree))))
    assert len(outcomes) == 1


async def test_solve_all_runs_many_problems_at_once_with_state_in_each_tree() -> None:
    problems = [f"problem {k}" for k in range(5)]
    strategy = ParticleGibbs(n=4, iterations=2)
    rng = random.Random(7)

    async def delay(request: SampleRequest) -> None:
        await asyncio.sleep(rng.random() * 0.002)

    searcher = searcher_for(_noisy_script(), delay=delay)
    together = {r.index: r async for r in searcher.solve_all(problems, strategy)}
    assert searcher.policy.max_in_flight > 1  # the problems really ran concurrently
    for k, problem in enumerate(problems):
        alone = await searcher_for(_noisy_script()).solve(problem, strategy)
        assert together[k].ok
        assert [c.text for c in together[k].candidates] == [c.text for c in alone.candidates]
        assert _draws(together[k].tree) == _draws(alone.tree)
    assert len({tuple(c.text for c in r.candidates) for r in together.values()}) > 1  # per-problem seeds


# -- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: ParticleFiltering(n=0),
        lambda: ParticleFiltering(n=4, temperature_resample=0),
        lambda: ParticleFiltering(n=4, temperature_resample=-1.0),
        lambda: ParticleFiltering(n=4, temperature_resample=math.nan),
        lambda: ParticleFiltering(n=4, max_depth=0),
        lambda: ParticleFiltering(n=4, weighting="odds"),
        lambda: ParticleFiltering(n=4, resampling="stratified"),
        lambda: ParticleFiltering(n=4, reduction="mean"),
        lambda: ParticleFiltering(n=4, selection="vote"),
        lambda: ParticleGibbs(n=4, iterations=0),
        lambda: ParticleGibbs(n=1, iterations=2),
        lambda: ParticleGibbs(n=4, reference_weight="mean"),
        lambda: EntropicParticleFiltering(n=4, ess_threshold=0),
        lambda: EntropicParticleFiltering(n=4, early_phase=1.5),
        lambda: EntropicParticleFiltering(n=4, annealing="linear"),
    ],
)
def test_bad_parameters_raise_value_error_at_construction(make) -> None:
    with pytest.raises(ValueError):
        make()


def test_built_from_options_like_the_catalog_does() -> None:
    catalog = {
        "particle_filtering": ParticleFiltering,
        "particle_gibbs": ParticleGibbs,
        "entropic_particle_filtering": EntropicParticleFiltering,
    }
    pg = build_strategy(catalog, "particle_gibbs", n=8, iterations=3, temperature_resample=None)
    assert isinstance(pg, ParticleGibbs) and pg.iterations == 3 and pg.temperature_resample == 1.0
    assert pg.budget_kind == "stepwise" and pg.selection == "naive"
    json.dumps(pg.options())  # results record the config as JSON
    with pytest.raises(ValueError, match="iterations"):
        build_strategy(catalog, "particle_filtering", n=8, iterations=3)
    with pytest.raises(ValueError):
        build_strategy(catalog, "particle_filtering", n=8, temperature_resample=0.0)
    epf = build_strategy(catalog, "entropic_particle_filtering", n=4)
    assert epf.resampling == "systematic" and epf.options()["annealing"] == "ess"
