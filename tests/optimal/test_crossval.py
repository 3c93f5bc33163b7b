import numpy as np
import pytest

from tests.optimal.helpers import outcomes_from_table
from ttsearch.study.optimal.bins import DifficultyBins
from ttsearch.study.optimal.crossval import assign_folds, cross_validate, fixed_curve, rank_options


def _bins(levels):
    levels = np.asarray(levels)
    return DifficultyBins("oracle", -levels.astype(float), levels, (-1.5, -2.5, -3.5, -4.5))


def test_choice_is_never_scored_on_the_problems_it_was_tuned_on():
    # A wins on problems 0-1, B on 2-3. Choosing on the held-out fold would score 100%;
    # choosing on the other fold picks the loser every time: cross-validation must say 0%.
    outcomes = outcomes_from_table({"beam/weighted": [1, 1, 0, 0], "dvts/weighted": [0, 0, 1, 1]})
    cv = cross_validate(outcomes, _bins([3, 3, 3, 3]), fold_of=[0, 0, 1, 1])  # one bin for all
    assert cv.optimal[0].accuracy == 0.0
    assert cv.best_fixed[0].accuracy == 0.0
    assert cv.choices[4] == ("dvts/weighted", "dvts/weighted", "beam/weighted", "beam/weighted")
    (row,) = cv.table
    # In-sample both tie at 50%: the table still reports a winner, with no margin.
    assert (row.level, row.winner, row.accuracy, row.margin, row.cv_accuracy) == (3, "beam/weighted", 0.5, 0.0, 0.0)


def test_per_bin_choice_beats_the_best_single_option_when_bins_differ():
    outcomes = outcomes_from_table(
        {"majority/majority": [1, 1, 1, 1, 0, 0, 0, 0], "beam/weighted": [0.5] * 8},
        tokens={"majority/majority": 100.0, "beam/weighted": 300.0},
    )
    cv = cross_validate(outcomes, _bins([1, 1, 1, 1, 5, 5, 5, 5]), folds=2)
    assert cv.optimal[0].accuracy == pytest.approx(0.75)  # easy: majority (1.0), hard: beam (0.5)
    # Single option: a tie at 50%, broken towards fewer tokens.
    assert cv.best_fixed[0].accuracy == pytest.approx(0.5)
    assert cv.best_fixed[0].generated_tokens == pytest.approx(100.0)
    assert cv.optimal[0].generated_tokens == pytest.approx(200.0)  # half the problems each
    easy, hard = cv.table
    assert (easy.level, easy.winner, easy.accuracy, easy.runner_up, easy.margin) == (
        1,
        "majority/majority",
        1.0,
        "beam/weighted",
        0.5,
    )
    assert (hard.level, hard.winner, hard.margin, hard.cv_accuracy) == (5, "beam/weighted", 0.5, 0.5)


def test_a_bin_missing_from_the_training_folds_takes_the_overall_winner():
    outcomes = outcomes_from_table({"majority/majority": [1, 1, 1, 0], "beam/weighted": [0, 0, 0, 1]})
    # Problem 3 is alone in its bin: when it is held out, no training problem shares its bin.
    cv = cross_validate(outcomes, _bins([1, 1, 1, 5]), fold_of=[0, 1, 0, 1])
    assert cv.choices[4][3] == "majority/majority"
    assert cv.optimal[0].accuracy == pytest.approx(0.75)


def test_folds_are_stratified_seeded_and_validated():
    levels = [1] * 5 + [2] * 5 + [5] * 3
    folds = assign_folds(levels, 5, seed=0)
    assert (folds == assign_folds(levels, 5, seed=0)).all()
    for level in (1, 2):  # 5 problems of a bin over 5 folds: one each
        assert sorted(folds[np.asarray(levels) == level].tolist()) == [0, 1, 2, 3, 4]
    assert np.bincount(folds).tolist() == [3, 3, 3, 2, 2]
    with pytest.raises(ValueError, match="at least 2 folds"):
        assign_folds(levels, 1)
    with pytest.raises(ValueError, match="cannot fill"):
        assign_folds([1, 2], 3)


def test_ranking_and_fixed_curves():
    outcomes = outcomes_from_table(
        {"a/majority": [1, 0], "b/weighted": [1, 0], "c/naive": [0, 0]}, tokens={"a/majority": 50.0, "b/weighted": 20.0}
    )
    assert rank_options(outcomes, 4, np.arange(2)) == ["b/weighted", "a/majority", "c/naive"]
    (point,) = fixed_curve(outcomes, "a/majority")
    assert (point.n, point.accuracy, point.generated_tokens, point.total_tokens) == (4, 0.5, 50.0, 50.0)
    with pytest.raises(ValueError, match="no option"):
        rank_options(outcomes, 8, np.arange(2))
