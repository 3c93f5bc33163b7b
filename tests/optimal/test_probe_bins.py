"""Bins a new problem can have (issue 20): thresholds fitted on the probe statistic, held-out
problems binned from samples other than the graded ones, the probe's cost charged, and PRM
tokens counted as computed, not as sent.

Each experiment here is built so that the leak it pins would change the numbers."""

from __future__ import annotations

import pytest

from tests.optimal.helpers import write_beam, write_best_of_n
from ttsearch.strategies.compute_optimal import ComputeOptimal
from ttsearch.study.optimal.analysis import analyse_experiment, format_analysis
from ttsearch.study.optimal.outcomes import build_outcomes
from ttsearch.study.optimal.policy_table import fit_policy
from ttsearch.study.optimal.records import load_runs

RIGHT = ("7", 0.9, True, 10)
WRONG = ("3", 0.1, False, 10)


def _spread_experiment(tmp_path):
    """Every problem's mean score over its 12 samples is 0.5 + j/1000, but each group of 2
    consecutive samples (a probe of 2) scores 0.1 + j/1000 or 0.9 + j/1000: a 2-sample
    mean spreads far wider than the 12-sample mean."""
    for seed in (0, 1, 2):
        problems = {}
        for j in range(20):
            low, high = 0.1 + j / 1000, 0.9 + j / 1000
            first, second = (low, high) if (j + seed) % 2 else (high, low)
            problems[f"p{j:02d}"] = [("7", first, True, 10)] * 2 + [("7", second, True, 10)] * 2
        write_best_of_n(tmp_path, seed, problems)
    return build_outcomes(load_runs([tmp_path]))


def test_thresholds_spread_the_probe_values_a_new_problem_shows_over_every_level(tmp_path):
    outcomes = _spread_experiment(tmp_path)
    table = fit_policy(outcomes)  # probe 2, the default
    # The statistic the online strategy computes: the mean of 2 samples.
    probes = [
        float(scores[i, g : g + 2].mean()) for scores in outcomes.predictor_scores for i in range(20) for g in (0, 2)
    ]
    counts = [sum(table.level_of(v) == level for v in probes) for level in range(1, 6)]
    # Thresholds fitted on the 12-sample means (all within 0.500..0.519) send every probe
    # to level 1 or 5; fitted on probe values, each level gets its share.
    assert all(0.1 * len(probes) <= c <= 0.3 * len(probes) for c in counts), counts


def test_the_table_records_its_probe_and_the_strategy_refuses_another(tmp_path):
    table = fit_policy(_spread_experiment(tmp_path), probe=2)
    assert table.probe == 2
    ComputeOptimal(n=4, policy=table, probe=2)
    with pytest.raises(ValueError, match=r"probe of 2 samples.*probe=1"):
        ComputeOptimal(n=4, policy=table, probe=1)


def _coin_experiment(tmp_path):
    """40 problems whose best-of-N outcome is a coin per (problem, seed): seeds 0 and 1 are
    right-right, right-wrong, wrong-right and wrong-wrong equally often, every sample of a
    (problem, seed) alike (right: score 0.9, wrong: 0.1). A problem's own samples say
    whether it is solved at that seed; the other seed's samples say nothing. Beam search
    solves every problem at seed 0 and none at seed 1."""
    patterns = [(RIGHT, RIGHT), (RIGHT, WRONG), (WRONG, RIGHT), (WRONG, WRONG)]
    for seed in (0, 1):
        write_best_of_n(tmp_path, seed, {f"p{j:02d}": [patterns[j % 4][seed]] * 4 for j in range(40)})
        beam = ("7", 0.5, True, 30) if seed == 0 else ("3", 0.5, False, 30)
        write_beam(tmp_path, seed, {f"p{j:02d}": [beam] * 2 for j in range(40)})
    return tmp_path


def test_held_out_bins_come_from_another_seed_than_the_graded_one(tmp_path):
    analysis = analyse_experiment([_coin_experiment(tmp_path)], folds=4, probe=2)
    # Binned from the other seed's samples, every option solves exactly half of every
    # bin: no bin can favour a strategy. Binned from its own samples (the leak), level 1
    # holds the problems best-of-N solved and shows it at 100%.
    for heuristic in ("predicted", "oracle_held_out"):
        rows = analysis.cross_validations[heuristic].table
        assert rows and all(r.accuracy == pytest.approx(0.5) for r in rows), heuristic
    same_samples = {(r.level, r.n): r for r in analysis.cross_validations["oracle"].table}
    assert same_samples[(1, 4)].accuracy == 1.0  # the paper's upper reference keeps its leak, labelled
    text = format_analysis(analysis)
    assert "oracle (gold answers, same samples)" in text
    assert "oracle (gold answers, another seed's samples)" in text


def test_the_probe_is_charged_to_every_predicted_point(tmp_path):
    for seed in (0, 1):
        write_best_of_n(
            tmp_path,
            seed,
            {f"p{j}": [RIGHT if (j + seed) % 3 else WRONG] * 4 for j in range(10)},
            usage={"generated_tokens": 40, "verifier_tokens": 100, "verifier_cached_tokens": 60},
        )
    analysis = analyse_experiment([tmp_path], folds=2, probe=2)
    oracle = {p.n: p for p in analysis.cross_validations["oracle"].optimal}
    predicted = {p.n: p for p in analysis.cross_validations["predicted"].optimal}
    # A probe of 2 samples: 2 x 10 generated tokens, 2/4 of the 40 PRM tokens computed.
    for n in (1, 2, 4):
        assert predicted[n].generated_tokens == pytest.approx(oracle[n].generated_tokens + 20)
        assert predicted[n].verifier_tokens == pytest.approx(oracle[n].verifier_tokens + 20)
        assert (oracle[n].probe_tokens, predicted[n].probe_tokens) == (0.0, pytest.approx(20 + 20))
    assert oracle[4].verifier_tokens == pytest.approx(40)  # computed (100 sent - 60 cached), not 100


def test_prm_tokens_are_what_the_prm_computed_and_old_records_say_what_they_fall_back_to(tmp_path):
    def outcomes(directory, usage):
        write_best_of_n(directory, 0, {"a": [RIGHT] * 4}, budgets=[2, 4], usage=usage)
        return build_outcomes(load_runs([directory]))

    recorded = outcomes(
        tmp_path / "new", {"verifier_tokens": 100, "verifier_cached_tokens": 90, "verifier_computed_tokens": 10}
    )
    cell = recorded.cells[("best_of_n/weighted", 4)]
    assert cell.verifier_tokens.tolist() == [10.0]
    assert cell.verifier_cached_tokens.tolist() == [90.0]
    assert recorded.cells[("best_of_n/weighted", 2)].verifier_tokens.tolist() == [5.0]  # pro rata
    assert recorded.prm_tokens_source == "computed"
    older = outcomes(tmp_path / "older", {"verifier_tokens": 100, "verifier_cached_tokens": 70})
    assert older.cells[("best_of_n/weighted", 4)].verifier_tokens.tolist() == [30.0]
    assert "verifier_tokens - verifier_cached_tokens" in older.prm_tokens_source
    oldest = outcomes(tmp_path / "oldest", {"verifier_tokens": 100})
    assert oldest.cells[("best_of_n/weighted", 4)].verifier_tokens.tolist() == [100.0]
    assert "sent" in oldest.prm_tokens_source
