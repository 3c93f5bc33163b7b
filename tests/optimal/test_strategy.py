"""ComputeOptimal on scripted backends: the probe predicts the bin, the table decides."""

from __future__ import annotations

import pytest

from tests.engine.helpers import make_searcher
from tests.strategies.test_revisions import _NoRevisions
from ttsearch.core.search import SearchLimits
from ttsearch.core.searcher import Searcher
from ttsearch.strategies.compute_optimal import ComputeOptimal
from ttsearch.strategies.policy_table import PolicyChoice, PolicyTable
from ttsearch.strategies.registry import budget_unit, make_strategy
from ttsearch.study.optimal.policy_table import load_policy, save_policy
from ttsearch.testing.scripted import EOS, PREVIOUS_ATTEMPT, ScriptCall, ScriptedPolicy, ScriptedVerifier, decode

# The PRM's score depends only on the problem, so the probe's mean score says how hard it is.
DIFFICULTY = {"easy": 0.9, "medium": 0.5, "hard": 0.1}


def _choice(strategy: str, kind: str, selection: str, **config) -> PolicyChoice:
    return PolicyChoice(
        label=strategy,
        strategy=strategy,
        config={"temperature": 0.8, **config},
        selection=selection,
        kind=kind,
        accuracy=0.5,
    )


BEST_OF_N = _choice("best_of_n", "sampling", "weighted")
MAJORITY = _choice("majority", "sampling", "majority")
BEAM = _choice("beam", "stepwise", "naive", width=2)
WIDE_DVTS = _choice("dvts", "stepwise", "weighted", width=8)  # cannot fit 8 - 2 samples


def _table() -> PolicyTable:
    by_level = {1: (BEST_OF_N,), 2: (BEST_OF_N,), 3: (MAJORITY, BEAM), 4: (BEAM,), 5: (WIDE_DVTS, BEAM)}
    return PolicyTable(
        thresholds=(0.8, 0.6, 0.4, 0.2),
        reduction="last",
        temperature=0.8,
        budgets=(4, 8),
        ranked={4: by_level, 8: by_level},
    )


def _script(call: ScriptCall) -> str:
    # Two steps; the answer is the sample index mod 3, so selections can be told apart.
    depth = call.text.count("\n\n")
    if call.request.stop and depth < 1:
        return "step one\n\n"
    return ("step one\n\n" if depth < 1 else "") + f"\\boxed{{{call.index % 3}}}{EOS}"


def _searcher() -> Searcher:
    policy = ScriptedPolicy(_script)
    verifier = ScriptedVerifier(lambda problem, steps: DIFFICULTY[problem])
    return Searcher(policy, verifier, limits=SearchLimits(max_solution_tokens=1000))


@pytest.mark.parametrize(
    ("problem", "level", "chosen", "inner_n", "pooled"),
    [("easy", 1, BEST_OF_N, 6, True), ("medium", 3, MAJORITY, 6, True), ("hard", 5, BEAM, 6, False)],
)
async def test_runs_the_tables_choice_for_the_predicted_bin(problem, level, chosen, inner_n, pooled) -> None:
    strategy = ComputeOptimal(n=8, policy=_table(), probe=2)
    searcher = _searcher()
    result = await searcher.solve(problem, strategy)
    plan = strategy.plan(result.tree)
    assert plan is not None
    assert (plan.level, plan.choice, plan.inner.n, plan.pooled) == (level, chosen, inner_n, pooled)
    assert plan.probe_score == pytest.approx(DIFFICULTY[problem])
    assert plan.inner.selection == chosen.selection == result.selection
    # The probe is the first request: 2 full solutions at the table's temperature.
    probe = searcher.policy.requests[0]
    assert (probe.n, probe.stop, probe.temperature) == (2, (), 0.8)
    # The probe counts in the budget: at most n samples start solutions, probe included.
    first_round = sum(r.n for r in searcher.policy.requests if r.prompt_token_ids == probe.prompt_token_ids)
    assert first_round == 8
    assert result.usage.policy_samples == sum(r.n for r in searcher.policy.requests)
    probe_ids = {node.id for node in plan.probe_nodes}
    in_result = {c.node_id for c in result.candidates} & probe_ids
    assert in_result == (probe_ids if pooled else set())


async def test_sampling_choice_selects_from_exactly_n_samples_probe_included() -> None:
    strategy = ComputeOptimal(n=8, policy=_table(), probe=2)
    result = await _searcher().solve("easy", strategy)
    assert len(result.candidates) == 8 and result.usage.policy_samples == 8
    assert result.usage.verifier_calls == 8  # every sample scored once
    # Answers by sample index mod 3: probe 0,1; then 0,1,2,0,1,2 -> "0" and "1" tie at 3 x 0.9,
    # weighted selection keeps the earlier group.
    assert result.answer == "0"


async def test_a_stepwise_option_too_wide_for_the_budget_left_is_skipped() -> None:
    strategy = ComputeOptimal(n=8, policy=_table(), probe=2)
    result = await _searcher().solve("hard", strategy)
    plan = strategy.plan(result.tree)
    assert plan.choice == BEAM and plan.inner.n == 6 and plan.inner.width == 2
    # Beam search sees the tree without the probe: it returns its own 6 finished beams.
    assert len(result.candidates) == 6
    assert all(c.node_id not in {n.id for n in plan.probe_nodes} for c in result.candidates)
    # The probe is paid for although its solutions are not among the candidates: every
    # generated token of the tree (probe included) and the probe's PRM calls are in Usage.
    generated = [node for node in result.tree.nodes() if not node.is_root]  # the root holds the prompt
    probe_tokens = sum(len(node.segment_token_ids) for node in plan.probe_nodes)
    beam_tokens = sum(len(node.segment_token_ids) for node in plan.view.nodes() if not node.is_root)
    assert probe_tokens > 0 and result.usage.generated_tokens == beam_tokens + probe_tokens
    assert result.usage.generated_tokens == sum(len(node.segment_token_ids) for node in generated)
    assert result.usage.policy_samples == len(generated) == len(plan.probe_nodes) + 12  # 6 beams x 2 steps
    assert result.usage.verifier_calls == len(generated)  # the probe's 2 solutions were scored too


@pytest.mark.parametrize(
    ("strategy", "config"),
    [
        ("beam", {"width": 2}),
        ("dvts", {"width": 2}),
        ("rebase", {}),
        ("particle_filtering", {}),
        ("particle_gibbs", {"iterations": 2}),
        ("entropic_particle_filtering", {}),
        ("mcts", {"children": 2}),  # rollout values; raised KeyError on the probe's nodes
        ("mcts", {"children": 2, "value": "step"}),
    ],
)
async def test_every_search_method_runs_as_the_tables_choice_beside_the_probe(strategy, config) -> None:
    option = _choice(strategy, "stepwise", "weighted", **config)
    by_level = {level: (option,) for level in range(1, 6)}
    table = PolicyTable(
        thresholds=(0.8, 0.6, 0.4, 0.2), reduction="last", temperature=0.8, budgets=(8,), ranked={8: by_level}
    )
    compute_optimal = ComputeOptimal(n=8, policy=table, probe=2)
    result = await _searcher().solve("hard", compute_optimal)
    plan = compute_optimal.plan(result.tree)
    assert result.error is None and plan is not None and plan.inner.n == 6
    assert result.candidates, "the chosen search finished solutions"
    probe = {node.id for node in plan.probe_nodes}
    assert probe and not {c.node_id for c in result.candidates} & probe  # a search's own candidates only


async def test_the_table_is_read_at_the_largest_budget_not_above_n() -> None:
    table = _table()
    by_level = {level: (MAJORITY,) for level in range(1, 6)}
    table = PolicyTable(
        thresholds=table.thresholds,
        reduction="last",
        temperature=0.8,
        budgets=(4, 8),
        ranked={4: by_level, 8: table.ranked[8]},
    )
    strategy = ComputeOptimal(n=6, policy=table, probe=1)
    result = await _searcher().solve("easy", strategy)
    assert strategy.plan(result.tree).choice == MAJORITY and result.usage.policy_samples == 6


async def test_every_problem_gets_its_own_plan_when_solved_together() -> None:
    strategy = ComputeOptimal(n=8, policy=_table(), probe=2)
    results = [r async for r in _searcher().solve_all(["easy", "hard", "medium"], strategy)]
    chosen = {r.problem: strategy.plan(r.tree).choice for r in results}
    assert chosen == {"easy": BEST_OF_N, "hard": BEAM, "medium": MAJORITY}


def test_a_policy_file_is_read_by_the_caller_and_recorded_by_name(tmp_path) -> None:
    path = save_policy(_table(), tmp_path / "policy.json")
    strategy = make_strategy("compute_optimal", n=8, policy=load_policy(path), policy_file=str(path), probe=3)
    assert isinstance(strategy, ComputeOptimal) and strategy.table == _table() and strategy.reduction == "last"
    assert strategy.options()["policy"] == str(path)  # results record the file, not the table
    with pytest.raises(TypeError, match="must be a PolicyTable"):
        ComputeOptimal(n=8, policy=str(path))  # type: ignore[arg-type]  # strategies do no I/O


def test_bad_configurations_are_named(tmp_path) -> None:
    with pytest.raises(ValueError, match="leaves nothing"):
        ComputeOptimal(n=2, policy=_table(), probe=2)
    with pytest.raises(ValueError, match="below the policy table's smallest"):
        ComputeOptimal(n=3, policy=_table(), probe=1)
    with pytest.raises(ValueError, match="no such policy file"):
        load_policy(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="probe must be"):
        ComputeOptimal(n=8, policy=_table(), probe=0)


async def test_no_verifier_is_an_error() -> None:
    searcher = make_searcher(_script, verifier=False)
    with pytest.raises(ValueError, match="needs a verifier"):
        await searcher.solve("easy", ComputeOptimal(n=8, policy=_table()))


def _long_probe_script(call: ScriptCall) -> str:
    # A full solution (the probe's request: no stop string) opens with a step too long for
    # the PRM; step-by-step search writes short steps the PRM can score.
    if not call.request.stop:
        return f"{'x' * 200}\n\n\\boxed{{{call.index % 3}}}{EOS}"
    return _script(call)


async def test_a_probe_the_prm_could_not_score_at_all_falls_back_to_the_hardest_level() -> None:
    # Every probe sample is too long for the PRM (dropped unscored): there is no probe score
    # to bin by. It used to divide by zero (the problem failed with ZeroDivisionError).
    policy = ScriptedPolicy(_long_probe_script)
    verifier = ScriptedVerifier(lambda problem, steps: DIFFICULTY[problem], max_input_chars=100)
    searcher = Searcher(policy, verifier, limits=SearchLimits(max_solution_tokens=1000))
    strategy = ComputeOptimal(n=8, policy=_table(), probe=2)
    result = await searcher.solve("easy", strategy)
    assert result.error is None
    plan = strategy.plan(result.tree)
    assert plan is not None and plan.probe_nodes == []
    # The hardest level (5) and its best option that fits: WIDE_DVTS cannot, so beam search.
    assert plan.level == 5 and plan.choice == BEAM and plan.inner.n == 6
    assert plan.probe_score != plan.probe_score  # NaN: no probe score exists
    assert len(result.candidates) == 6 and result.answer is not None
    # The unscored probe still cost its 2 samples: at most n samples in all.
    assert result.usage.policy_samples == 2 + 12


REVISE = _choice("revisions", "stepwise", "weighted", chain_length=4, context=4, selection_within="weighted")


def _revising_table() -> PolicyTable:
    by_level = {1: (BEST_OF_N,), 2: (BEST_OF_N,), 3: (BEST_OF_N,), 4: (REVISE,), 5: (REVISE,)}
    return PolicyTable(
        thresholds=(0.8, 0.6, 0.4, 0.2), reduction="last", temperature=0.8, budgets=(8,), ranked={8: by_level}
    )


async def test_a_revisions_option_runs_whole_chains_in_the_budget_left() -> None:
    strategy = ComputeOptimal(n=11, policy=_revising_table(), probe=2)
    searcher = _searcher()
    result = await searcher.solve("hard", strategy)
    plan = strategy.plan(result.tree)
    assert plan is not None and plan.choice == REVISE
    # 11 - 2 probe samples leave 9: two chains of 4 attempts (a third would not fit).
    assert (plan.inner.n, plan.inner.chains, plan.pooled) == (8, 2, False)
    assert len(result.candidates) == 2  # one per chain
    revisions = [r for r in searcher.policy.requests if PREVIOUS_ATTEMPT in decode(r.prompt_token_ids)]
    assert len(revisions) == 2 * 3  # attempts 2-4 of each chain are prompted with the earlier ones
    assert result.usage.policy_samples == 2 + 8


def test_compute_optimal_needs_revision_prompts_only_when_its_table_revises() -> None:
    assert ComputeOptimal(n=8, policy=_revising_table(), probe=2).requires_revision_prompts()
    assert not ComputeOptimal(n=8, policy=_table(), probe=2).requires_revision_prompts()


async def test_a_revising_table_on_a_policy_without_revision_prompts_is_refused_before_any_request() -> None:
    policy = _NoRevisions()
    searcher = Searcher(policy, ScriptedVerifier(), limits=SearchLimits(max_solution_tokens=1000))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cannot render revision prompts"):
        await searcher.solve("hard", ComputeOptimal(n=8, policy=_revising_table(), probe=2))
    assert policy.inner.requests == []


@pytest.mark.parametrize(
    ("strategy", "options", "unit"),
    [
        ("best_of_n", {}, 1),
        ("beam", {}, 4),  # the default width
        ("dvts", {"width": 2}, 2),
        ("revisions", {"chain_length": 8}, 8),
        ("revisions", {"chain_length": "n"}, 1),
        ("not-registered", {"width": 4}, 1),
    ],
)
def test_the_budget_unit_of_each_option(strategy: str, options: dict[str, object], unit: int) -> None:
    assert budget_unit(strategy, options) == unit
