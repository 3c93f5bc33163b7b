"""Tests for the pure parts of the toy training script: ROC AUC and PRM example labelling."""

from __future__ import annotations

import itertools
import random

import pytest

from tools.toy_train import label_solutions, roc_auc
from ttsearch.backends.prm_formats import MATH_SHEPHERD, PrmEncoder
from ttsearch.toy.task import final_step, make_problems
from ttsearch.toy.tokenizer import STEP_TAG, build_tokenizer


def _pairwise_auc(scores: list[float], labels: list[bool]) -> float:
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_roc_auc_extremes_and_ties() -> None:
    assert roc_auc([0.1, 0.2, 0.8, 0.9], [False, False, True, True]) == 1.0
    assert roc_auc([0.9, 0.8, 0.2, 0.1], [False, False, True, True]) == 0.0
    assert roc_auc([0.5, 0.5, 0.5, 0.5], [False, True, False, True]) == 0.5


@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_matches_pair_counting(seed: int) -> None:
    rng = random.Random(seed)
    scores = [rng.choice([0.1, 0.2, 0.3, 0.4, 0.5]) for _ in range(60)]  # many ties
    labels = [rng.random() < 0.4 + 0.2 * (s > 0.3) for s in scores]
    assert roc_auc(scores, labels) == pytest.approx(_pairwise_auc(scores, labels))


def test_roc_auc_needs_both_classes() -> None:
    with pytest.raises(ValueError):
        roc_auc([0.1, 0.2], [True, True])


def test_label_solutions_gives_local_step_labels_at_the_tags() -> None:
    tok = build_tokenizer()
    encoder = PrmEncoder(MATH_SHEPHERD, tok)
    problem = make_problems(2, seed=0)[1]  # level 2: four arithmetic steps
    gold = problem.solution
    assert gold is not None
    steps = gold.split("\n\n")
    wrong_second = "\n\n".join([steps[0], steps[1].replace(" = ", " = 1"), *steps[2:]])
    wrong_final = "\n\n".join([*steps[:-1], final_step(int(problem.answer) + 1)])
    texts = [gold, wrong_second, wrong_final, gold, ""]
    data = label_solutions(encoder, [problem], [texts], dedupe=True)
    # The repeated gold text and the empty text are dropped.
    assert [ex.source for ex in data] == [(0, 0), (0, 1), (0, 2)]
    assert data[0].labels == (True,) * 5 and data[0].correct
    # Step 2's result is wrong and step 3 does not start from it: both are flagged; step 4
    # and the final answer follow from what step 3 wrote.
    assert data[1].labels == (True, False, False, True, True) and data[1].correct
    assert data[2].labels == (True, True, True, True, False) and not data[2].correct
    tag = tok.convert_tokens_to_ids(STEP_TAG)
    for ex in data:
        assert [ex.token_ids[p] for p in ex.tag_positions] == [tag] * 5
    assert data[0].token_ids == encoder.encode(problem.problem, steps).token_ids


def test_synthetic_pairs_are_a_gold_solution_and_a_one_slip_copy() -> None:
    from tools.toy_train import synthetic_pairs

    encoder = PrmEncoder(MATH_SHEPHERD, build_tokenizer())
    problems = make_problems(10, seed=4)
    data = synthetic_pairs(encoder, problems, random.Random(0))
    assert [ex.source for ex in data] == [(i, j) for i in range(10) for j in (0, 1)]
    for gold, slipped in zip(data[::2], data[1::2]):
        assert all(gold.labels) and gold.correct
        assert list(slipped.labels).count(False) == 1 and not slipped.correct
        assert len(gold.labels) == len(slipped.labels)
