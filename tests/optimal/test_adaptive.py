import pytest

from tests.optimal.helpers import write_best_of_n, write_majority
from ttsearch.study.optimal.adaptive import simulate_adaptive
from ttsearch.study.optimal.records import load_runs

SURE = [("7", 0.9, True, 10)] * 4
# Gold 7: the first two samples are wrong and poorly rated, the last two right and rated high.
SLOW = [("3", 0.2, False, 1), ("5", 0.1, False, 1), ("7", 0.9, True, 1), ("7", 0.9, True, 1)]


def test_budget_moves_from_a_settled_problem_to_an_uncertain_one(tmp_path):
    write_best_of_n(tmp_path, 0, {"a": SURE, "b": SLOW}, budgets=None)
    (point,) = simulate_adaptive(load_runs([tmp_path]), [2])
    # Uniform N=2: rotation 0 gives b [3, 5] (wrong), rotation 1 [7, 7] (right): 75%.
    assert point.uniform_accuracy == pytest.approx(0.75)
    # Adaptive, same 4 samples per rotation: a settles after 1 (uncertainty 0.1); b draws 3.
    assert point.adaptive_accuracy == 1.0
    assert point.max_samples == 3
    # Tokens follow the samples drawn. Uniform: a 20, b 2 in each rotation. Adaptive:
    # rotation 0 -> a 1 sample (10), b 3 (3); rotation 1 (b starts with [7, 7], as sure as
    # a) -> 2 each (20, 2).
    assert point.uniform_tokens == pytest.approx(11.0)
    assert point.adaptive_tokens == pytest.approx((13 / 2 + 22 / 2) / 2)


def test_never_draws_beyond_the_recorded_samples_and_spends_at_most_the_total(tmp_path):
    write_best_of_n(tmp_path, 0, {"a": SURE, "b": SLOW}, budgets=None)
    (point,) = simulate_adaptive(load_runs([tmp_path]), [4])
    assert point.max_samples == 4  # both problems already hold all 4: nothing to move
    assert point.adaptive_accuracy == point.uniform_accuracy == 1.0


def test_unusable_runs_are_refused(tmp_path):
    write_majority(tmp_path, 0, {"a": SURE[:2]})
    with pytest.raises(ValueError, match="without PRM scores"):
        simulate_adaptive(load_runs([tmp_path]), [2])
    write_best_of_n(tmp_path / "b", 0, {"a": SURE[:2]}, n=2, budgets=None)
    with pytest.raises(ValueError, match="exceeds the 2 samples"):
        simulate_adaptive(load_runs([tmp_path / "b"]), [4])


def test_the_analysis_and_its_text_compare_adaptive_with_uniform_at_equal_samples(tmp_path):
    from ttsearch.study.optimal.analysis import analyse_experiment, format_analysis

    write_best_of_n(tmp_path, 0, {"a": SURE, "b": SLOW})
    analysis = analyse_experiment([tmp_path])
    # Every budget N >= 2 the predictor's samples cover, replayed as simulate_adaptive does.
    assert analysis.adaptive == simulate_adaptive(load_runs([tmp_path]), [2, 4])
    text = format_analysis(analysis)
    assert "adaptive budget across the batch vs uniform best-of-N (best_of_n, weighted), equal total samples" in text
    row = next(line for line in text.splitlines() if line.split()[:1] == ["2"] and "+25.0" in line)
    assert row.split()[1:4] == ["75.0", "100.0", "+25.0"]
