"""Search semantics that a review found wrong (issue #12), each on scripted backends."""

from __future__ import annotations

import asyncio
import random

import pytest

from tests.engine.helpers import depth_of, make_searcher, stepwise_script
from ttsearch.engine.backend import SampleRequest
from ttsearch.strategies import DVTS, BeamSearch, LookaheadSearch

# -- ties are broken by tree position, not by completion order ------------------------------


def _tied_script():
    # Every step scores 0.5; the answer names the path, so any tie-break shows in it.
    return stepwise_script(lambda d, i, text: 0.5, steps=3, answer=lambda text, i: "".join(
        part.split()[0] for part in text.split("\n\n") if part
    ) + f"e{i}")


def _random_latency(pattern: int):
    rng = random.Random(pattern)

    async def delay(request: SampleRequest) -> None:
        await asyncio.sleep(rng.random() * 0.003)

    return delay


@pytest.mark.parametrize("make", [lambda: BeamSearch(n=4, width=2), lambda: DVTS(n=4, width=2)], ids=["beam", "dvts"])
async def test_equal_scores_give_the_same_result_under_any_latency(make) -> None:
    outcomes = set()
    for pattern in range(8):
        searcher = make_searcher(_tied_script(), delay=_random_latency(pattern))
        result = await searcher.solve("q", make())
        outcomes.add((result.answer, tuple((c.text, c.score) for c in result.candidates)))
    assert len(outcomes) == 1
