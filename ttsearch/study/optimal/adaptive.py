"""Adaptive budget across a batch (beyond the paper), simulated offline on recorded samples.

Uniform best-of-N gives every problem N samples. The adaptive allocator gives the batch
the same total, N x problems, but spends it where the evidence is still uncertain: each
problem first gets `initial` samples, then each further sample goes to the problem whose
uncertainty is highest,

    uncertainty = 1 - (summed PRM score of the weighted-vote winner's samples) / (samples drawn),

which is low only when the samples agree on one answer *and* the PRM rates them highly
(agreement with low scores, or high scores on split answers, stay uncertain). Ties go to
the problem with fewer samples, then the earlier one. A problem never draws more samples
than were recorded for it. Both sides select with weighted best-of-N.

Offline only: a problem's k-th sample is its k-th recorded sample (sample order), so the
adaptive and the uniform runs see the same samples and differ only in how many each
problem draws. Each comparison is averaged over the n // N rotations of the sample order
(the uniform side is then exactly the disjoint-group average of docs/records.md) and over seeds.
The engine-level version, reallocating across `solve_all`'s problems while they run, is
`ttsearch.strategies.adaptive.AdaptiveBestOfN`. `ttsearch report` and `ttsearch fit-policy`
show this replay next to the compute-optimal curves (`analysis.adaptive`).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ttsearch.errors import ExperimentError
from ttsearch.evaluation.aggregation import candidate_keys, select_by_keys
from ttsearch.study.optimal.records import CandidateRecord, RunRecords


@dataclass(frozen=True, slots=True)
class AdaptivePoint:
    """Uniform vs adaptive at one average budget N per problem (equal total samples)."""

    n: int
    uniform_accuracy: float
    adaptive_accuracy: float
    uniform_tokens: float  # generated tokens per problem
    adaptive_tokens: float
    max_samples: int  # most samples any one problem drew under the adaptive allocation


def simulate_adaptive(
    runs: Sequence[RunRecords], budgets: Sequence[int], *, initial: int = 1
) -> tuple[AdaptivePoint, ...]:
    """Compare the adaptive allocation with uniform best-of-N on the runs' recorded samples.

    :param runs: sampling runs of one label, scored by the PRM (one per seed).
    :raises ValueError: an unscored or stepwise run, a budget above the samples recorded.
    """
    if not runs:
        raise ValueError("no runs to simulate")
    if initial < 1:
        raise ValueError(f"initial must be >= 1, got {initial}")
    for run in runs:
        if run.kind != "sampling":
            raise ExperimentError(f"run {run.run_id} is {run.kind}; the simulation needs sampling runs")
        if not all(c.scored for p in run.problems.values() for c in p.candidates):
            raise ExperimentError(f"run {run.run_id} has candidates without PRM scores")
    out = []
    for n in budgets:
        results = [_simulate_run(run, n, initial) for run in runs]
        out.append(
            AdaptivePoint(
                n=n,
                uniform_accuracy=_mean(r[0] for r in results),
                adaptive_accuracy=_mean(r[1] for r in results),
                uniform_tokens=_mean(r[2] for r in results),
                adaptive_tokens=_mean(r[3] for r in results),
                max_samples=max(r[4] for r in results),
            )
        )
    return tuple(out)


def _simulate_run(run: RunRecords, n: int, initial: int) -> tuple[float, float, float, float, int]:
    problems = [p for _, p in sorted(run.problems.items())]
    size = min((len(p.candidates) for p in problems if p.error is None and p.candidates), default=0)
    if size < n:
        raise ValueError(f"run {run.run_id}: budget N={n} exceeds the {size} samples recorded per problem")
    rotations = size // n
    stats = [0.0, 0.0, 0.0, 0.0]
    most = 0
    for r in range(rotations):
        orders = [_rotated(p.candidates, r * n) if p.error is None else () for p in problems]
        uniform = [order[:n] for order in orders]
        adaptive = _allocate(orders, n * sum(1 for o in orders if o), min(initial, n))
        most = max(most, max(len(a) for a in adaptive))
        for k, drawn in enumerate((uniform, adaptive)):
            stats[k] += _mean(_solved(cands) for cands in drawn) / rotations
            stats[2 + k] += _mean(sum(c.num_tokens for c in cands) for cands in drawn) / rotations
    return stats[0], stats[1], stats[2], stats[3], most


def _allocate(orders: list[tuple[CandidateRecord, ...]], total: int, initial: int) -> list[tuple[CandidateRecord, ...]]:
    """How many of its samples (in order) each problem draws under the adaptive rule."""
    drawn = [min(initial, len(order)) for order in orders]
    left = total - sum(drawn)
    heap = [(-_uncertainty(order[:k]), k, i) for i, (order, k) in enumerate(zip(orders, drawn)) if k < len(order)]
    heapq.heapify(heap)
    while left > 0 and heap:
        _, k, i = heapq.heappop(heap)
        drawn[i] = k + 1
        left -= 1
        if k + 1 < len(orders[i]):
            heapq.heappush(heap, (-_uncertainty(orders[i][: k + 1]), k + 1, i))
    assert left >= 0, "the allocation overspent its budget"
    return [order[:k] for order, k in zip(orders, drawn)]


def _uncertainty(cands: Sequence[CandidateRecord]) -> float:
    if not cands:
        return 1.0
    answers = [c.answer for c in cands]
    chosen = select_by_keys("weighted", answers, candidate_keys(answers), [c.score for c in cands])
    if chosen is None:  # no sample has an answer yet
        return 1.0
    return 1.0 - chosen.score / len(cands)


def _solved(cands: Sequence[CandidateRecord]) -> float:
    if not cands:
        return 0.0
    answers = [c.answer for c in cands]
    chosen = select_by_keys("weighted", answers, candidate_keys(answers), [c.score for c in cands])
    return float(chosen is not None and cands[chosen.index].correct)


def _rotated(cands: Sequence[CandidateRecord], start: int) -> tuple[CandidateRecord, ...]:
    cands = tuple(cands)
    return cands[start:] + cands[:start]


def _mean(values: Iterable[float]) -> float:
    items = list(values)
    return math.fsum(items) / len(items) if items else 0.0
