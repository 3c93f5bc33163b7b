"""End to end on the shipped toy world, through the experiment runner and real vLLM engines:
search helps, as the science predicts.

On held-out toy problems, with the trained policy and PRM and the toy recipe's settings
(recipes/toy.yaml: T=1.0, the min reduction): weighted best-of-N@16 beats majority@16 (the
PRM adds information beyond agreement), beam search@16 beats a single sample, and every
strategy is more accurate at N=16 than at N=1 (majority and best-of-N at N=1: the mean
single-sample accuracy over the 16 samples). The margins are below the gaps measured over
three seeds (see docs/toy-world.md), so they hold across seeds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ttsearch.cli.experiment import TOY_RECIPE
from ttsearch.study import load_recipe, run_experiment
from ttsearch.study.report import build_report, load_experiment

# The module's fixture searches 100 problems with six strategies (8 runs, ~5-9 min on 2
# busy cores): above the suite's default 300 s per-test timeout.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500), pytest.mark.asyncio(loop_scope="session")]

MARGIN = 0.02  # 2 of 100 problems; the smallest gap over three seeds was 2.9 (docs/toy-world.md)
STRATEGIES = [
    {"strategy": "best_of_n", "n": [1, 16], "reduction": "min"},
    {"strategy": "beam", "n": [1, 16], "width": 4, "reduction": "min", "per_n": {1: {"width": 1}}},
    {"strategy": "dvts", "n": [1, 16], "width": 4, "reduction": "min", "per_n": {1: {"width": 1}}},
    # Issue 18's methods at N=16 (recipes/toy-search-family-n16.yaml's settings), each with
    # its own selection. Over seeds 0, 1, 2 they beat majority@16 by at least (REBASE 13,
    # particle filtering with its_hub's logit weights 10, MCTS with its default rollout values
    # and weighted vote 6, entropic PF 4) points: see docs/methods/results.md. Particle
    # filtering with softmax(score / T=1) weights (gap 1 at seed 1) and particle Gibbs (2, at
    # twice the compute) are not asserted.
    {"strategy": "rebase", "n": [16], "reduction": "min"},
    {"label": "pf-logit", "strategy": "particle_filtering", "n": [16], "reduction": "min", "weighting": "logit"},
    {"label": "epf", "strategy": "entropic_particle_filtering", "n": [16], "reduction": "min"},
    {"strategy": "mcts", "n": [16], "reduction": "min"},
]
NEW_METHOD_MARGINS = {"rebase": 0.05, "pf-logit": 0.05, "epf": MARGIN, "mcts": 0.05}


@pytest.fixture(scope="module")
async def accuracy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[float, float]]:
    recipe = load_recipe(TOY_RECIPE, [f"strategies={json.dumps(STRATEGIES)}", "dataset.end=100"])
    out: Path = tmp_path_factory.mktemp("toy") / "exp"
    summary = await run_experiment(recipe, out, progress=False, report=False)
    assert summary.failed == 0 and summary.searched == 9 * 100
    report = build_report(load_experiment(out))
    bon = report.strategy("best_of_n")
    accuracy = {
        "majority": (bon.accuracy(1, "majority"), bon.accuracy(16, "majority")),
        "weighted_bon": (bon.accuracy(1, "weighted"), bon.accuracy(16, "weighted")),
        "beam": (report.strategy("beam").accuracy(1), report.strategy("beam").accuracy(16)),
        "dvts": (report.strategy("dvts").accuracy(1), report.strategy("dvts").accuracy(16)),
    }
    # the new methods at N=16 only (nan at N=1), with their own selection
    return accuracy | {label: (float("nan"), report.strategy(label).accuracy(16)) for label in NEW_METHOD_MARGINS}


async def test_weighted_best_of_n_beats_majority_at_16(accuracy: Any) -> None:
    assert accuracy["weighted_bon"][1] >= accuracy["majority"][1] + MARGIN, accuracy


async def test_beam_search_at_16_beats_a_single_sample(accuracy: Any) -> None:
    single = accuracy["majority"][0]  # one sample: every selection method returns its answer
    assert accuracy["beam"][1] >= single + MARGIN, accuracy


async def test_every_strategy_improves_from_1_to_16(accuracy: Any) -> None:
    for method, (at_1, at_16) in accuracy.items():
        if method not in NEW_METHOD_MARGINS:
            assert at_16 >= at_1 + MARGIN, (method, accuracy)


async def test_the_new_search_methods_beat_sampling_at_16(accuracy: Any) -> None:
    for method, margin in NEW_METHOD_MARGINS.items():
        assert accuracy[method][1] >= accuracy["majority"][1] + margin, (method, accuracy)
