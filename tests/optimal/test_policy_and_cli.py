"""fit-policy end to end on a hand-made experiment where per-bin choice must win."""

from __future__ import annotations

import json

import pytest

from tests.optimal.helpers import write_beam, write_best_of_n, write_majority, write_run
from ttsearch.cli.app import main
from ttsearch.errors import PolicyFileError
from ttsearch.strategies.compute_optimal import ComputeOptimal
from ttsearch.strategies.policy_table import policy_from_dict, policy_to_dict
from ttsearch.study.optimal.analysis import analyse_experiment, format_analysis
from ttsearch.study.optimal.outcomes import build_outcomes
from ttsearch.study.optimal.policy_table import fit_policy, load_policy
from ttsearch.study.optimal.records import load_runs

# 4 easy + 6 hard problems: the equal-count quintiles put the easy ones at levels 1-2 and
# the hard ones at 3-5, whatever the tie-break.
EASY = [(f"e{i}", [("7", 0.9, True, 10)] * 4) for i in range(4)]
HARD = [(f"h{i}", [("3", 0.2, False, 10)] * 4) for i in range(6)]


def _experiment(tmp_path):
    # Best-of-N solves the easy half, beam search the hard half (and fails the easy one).
    write_best_of_n(tmp_path, 0, dict(EASY + HARD))
    beam = {uid: [("3", 0.5, False, 30)] * 2 for uid, _ in EASY} | {uid: [("7", 0.5, True, 30)] * 2 for uid, _ in HARD}
    write_beam(tmp_path, 0, beam)
    return tmp_path


def test_analysis_shows_per_bin_choice_winning_only_where_the_bins_differ(tmp_path):
    analysis = analyse_experiment([_experiment(tmp_path)], folds=5)
    for heuristic in ("oracle", "predicted"):
        cv = analysis.cross_validations[heuristic]
        assert [(p.n, p.accuracy) for p in cv.optimal] == [(1, 0.4), (2, 0.4), (4, 1.0)]
        # One option for everything can win at most the 6 hard problems.
        assert [p.accuracy for p in cv.best_fixed][:2] == [0.4, 0.4] and cv.best_fixed[2].accuracy <= 0.6
        rows = {(r.level, r.n): r for r in cv.table}
        assert rows[(1, 4)].winner.startswith("best_of_n/") and rows[(1, 4)].runner_up.startswith("beam/")
        assert rows[(1, 4)].margin == 1.0
        # The hard problems' level: 4 by the oracle's equal-count quantiles; every equal
        # probe value of a hard problem goes to one level (3), as a new problem's would.
        hard = rows[(4, 4)] if heuristic == "oracle" else rows[(3, 4)]
        assert hard.winner.startswith("beam/") and hard.cv_accuracy == 1.0
    assert analysis.reference == "best_of_n/weighted"
    matches = analysis.matches["predicted"]
    assert (matches[0].reference_n, matches[2].reference_n) == (1, None)  # N=4's 100% is never reached
    text = format_analysis(analysis)
    assert "compute-optimal, predicted (PRM probe of 2, the same seed: only one recorded" in text
    assert "not reached" in text and "no held-out-sample oracle" in text


def test_policy_table_bins_new_problems_and_round_trips(tmp_path):
    table = fit_policy(build_outcomes(load_runs([_experiment(tmp_path)])))
    # Levels 1|2 and 3|4|5 split tie blocks: those thresholds are the tied value itself.
    assert table.thresholds == pytest.approx((0.9, 0.55, 0.2, 0.2))
    assert (table.level_of(0.9), table.level_of(0.2)) == (1, 3)
    assert table.ranked[4][1][0].strategy == "best_of_n" and table.ranked[4][3][0].strategy == "beam"
    assert table.ranked[1][3][0].strategy == "best_of_n"  # nothing else was recorded at N=1
    assert (table.reduction, table.temperature, table.source["problems"]) == ("last", 0.8, 10)
    assert policy_from_dict(json.loads(json.dumps(policy_to_dict(table)))) == table
    with pytest.raises(PolicyFileError, match="not a ttsearch policy"):
        policy_from_dict({"format": "other"})
    # A version-1 file (before tables recorded their probe) still loads, probe unknown.
    old = {k: v for k, v in policy_to_dict(table).items() if k != "probe"} | {"version": 1}
    assert policy_from_dict(old).probe is None and table.probe == 2
    with pytest.raises(PolicyFileError, match="versions 1, 2.*ttsearch fit-policy"):
        policy_from_dict(policy_to_dict(table) | {"version": 3})
    broken = policy_to_dict(table)
    del broken["table"][0]
    with pytest.raises(PolicyFileError, match="every level"):
        policy_from_dict(broken)


def test_fit_policy_command_writes_a_table_the_strategy_loads(tmp_path, capsys):
    out = tmp_path / "policy.json"
    assert (
        main(["fit-policy", str(_experiment(tmp_path / "exp")), "-o", str(out), "--plot", str(tmp_path / "p.png")]) == 0
    )
    printed = capsys.readouterr().out
    assert "per-bin choice, oracle (gold answers, same samples)" in printed and "policy table:" in printed
    assert (tmp_path / "p.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="fitted for a probe of 2 samples, not probe=1"):
        ComputeOptimal(n=4, policy=load_policy(out), probe=1)
    strategy = ComputeOptimal(n=4, policy=load_policy(out), probe=2)
    assert strategy.table == load_policy(out) and strategy.table.probe == 2


def test_fit_policy_command_names_bad_input(tmp_path, capsys):
    assert main(["fit-policy", str(tmp_path), "-o", str(tmp_path / "p.json")]) == 2
    assert "no manifest.json" in capsys.readouterr().err
    write_majority(tmp_path, 0, {"a": [("7", 0.0, True, 1)] * 2, "b": [("7", 0.0, True, 1)] * 2})
    assert main(["fit-policy", str(tmp_path), "-o", str(tmp_path / "p.json")]) == 2
    assert "needs a sampling run scored by the PRM" in capsys.readouterr().err


def test_online_replay_bins_by_the_probe_and_pays_for_it(tmp_path):
    from ttsearch.study.optimal.probe import replay_online

    outcomes = build_outcomes(load_runs([_experiment(tmp_path)]))
    # Beam was recorded only at N=4, which no longer fits after a probe: hard problems fall
    # back to best-of-N and fail.
    assert [(p.n, p.accuracy) for p in replay_online(outcomes, probe=1)] == [(2, 0.4), (4, 0.4)]
    hard = {uid: [("7", 0.5, True, 30)] * 2 for uid, _ in HARD} | {uid: [("3", 0.5, False, 30)] * 2 for uid, _ in EASY}
    write_beam(tmp_path, 0, hard, n=2)
    outcomes = build_outcomes(load_runs([tmp_path]))
    two, four = replay_online(outcomes, probe=1)
    # N=2 leaves 1 sample: no room for width 2. N=4: all 10 right. Every probe of a hard
    # problem scores 0.2, and the thresholds (fitted on probe values) send equal values to
    # one level, where the training folds' hard problems made beam@2 the winner.
    assert (two.accuracy, four.accuracy) == (0.4, 1.0)
    # Tokens: easy -> best-of-4 pooling the probe (40); hard -> beam@2 (60) + a 10-token
    # probe (70). PRM: 40 for best-of-4, 20 + 10 for beam (a probe sample: 40 / 4).
    assert four.generated_tokens == pytest.approx((4 * 40 + 6 * 70) / 10)
    assert four.verifier_tokens == pytest.approx((4 * 40 + 6 * 30) / 10)


def test_compute_optimal_runs_are_measured_as_run_and_never_offered(tmp_path):
    _experiment(tmp_path)
    # A compute_optimal run in the same experiment: its records' own grades count.
    path = write_run(
        tmp_path,
        label="co",
        strategy="ComputeOptimal",
        kind="stepwise",
        n=4,
        seed=0,
        problems={uid: [("7", 0.9, True, 10)] for uid, _ in EASY + HARD},
    )
    lines = (tmp_path / "runs" / f"{path}.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    for r in records:
        r["correct"] = r["unique_id"] != "h0"
    (tmp_path / "runs" / f"{path}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    analysis = analyse_experiment([tmp_path])
    assert all(not f.option.startswith("co/") for f in analysis.fixed)
    (curve,) = analysis.measured
    assert (curve.option, [(p.n, p.accuracy) for p in curve.points]) == ("co", [(4, 0.9)])
    assert "co (as run)" in format_analysis(analysis)
