"""Replay the online `ComputeOptimal` strategy on recorded samples, cross-validated.

The model-predicted curve of `crossval` bins each problem by the mean PRM score of all its
recorded samples, which the online strategy never has. This replay does what the
strategy does: thresholds and per-bin rankings are fitted on the training folds (as
`fit_policy` fits them on a whole experiment), and a held-out problem is binned by the
mean score of the first `probe` samples of one seed of the predictor run, then gets the
best option that fits the budget left. The option's recorded accuracy on that problem is
what it scores; results are averaged over the predictor's seeds and the problems.

Budget, as online: a sampling option at the probe's temperature pools the probe, so it is
scored at N; any other option is scored at the largest budget it was recorded at that
fits N - probe (stepwise: a multiple of its width), plus the probe's tokens. A stepwise
run at exactly N - probe was usually not recorded, so this under-states stepwise choices.
"""

from __future__ import annotations

import numpy as np

from ttsearch.study.optimal.bins import fit_bins, level_of
from ttsearch.study.optimal.crossval import CurvePoint, assign_folds, rank_options
from ttsearch.study.optimal.outcomes import Outcomes


def replay_online(outcomes: Outcomes, *, probe: int = 2, folds: int = 5, seed: int = 0) -> tuple[CurvePoint, ...]:
    """The online strategy's accuracy and tokens per budget N > probe (empty without a predictor)."""
    if probe < 1:
        raise ValueError(f"probe must be >= 1, got {probe}")
    if outcomes.mean_score is None or outcomes.predictor is None or not outcomes.predictor_scores:
        return ()
    if any(scores.shape[1] < probe for scores in outcomes.predictor_scores):
        raise ValueError(f"a probe of {probe} needs at least {probe} recorded samples per problem")
    full = np.asarray(outcomes.mean_score)
    size = len(outcomes.problems)
    keys = np.asarray(outcomes.problems)
    fold_of = assign_folds(fit_bins("predicted", full, keys=outcomes.problems).levels, min(folds, size), seed=seed)
    probe_scores = [scores[:, :probe].mean(axis=1) for scores in outcomes.predictor_scores]
    everyone = np.arange(size)
    points = []
    for n in outcomes.budgets:
        if n <= probe:
            continue
        acc = np.zeros(size)
        gen = np.zeros(size)
        ver = np.zeros(size)
        for f in sorted(set(fold_of.tolist())):
            train = everyone[fold_of != f]
            bins = fit_bins("predicted", full[train], keys=keys[train].tolist())
            rankings = {}
            for level in range(1, bins.num_levels + 1):
                members = train[bins.levels == level]
                rankings[level] = rank_options(outcomes, n, members if members.size else train)
            for i in everyone[fold_of == f]:
                for scores in probe_scores:
                    ranking = rankings[level_of(float(scores[i]), bins.thresholds)]
                    a, g, v = _first_fitting(outcomes, ranking, n, probe, i)
                    acc[i] += a / len(probe_scores)
                    gen[i] += g / len(probe_scores)
                    ver[i] += v / len(probe_scores)
        points.append(
            CurvePoint(
                n=n, accuracy=float(acc.mean()), generated_tokens=float(gen.mean()), verifier_tokens=float(ver.mean())
            )
        )
    return tuple(points)


def _first_fitting(outcomes: Outcomes, ranking: list[str], n: int, probe: int, i: int) -> tuple[float, float, float]:
    """(accuracy, generated tokens, PRM tokens) of the best option that fits, probe included."""
    assert outcomes.predictor is not None and outcomes.predictor_tokens is not None
    probe_generated = probe * float(outcomes.predictor_tokens[i])
    prm_per_sample = _prm_tokens_per_sample(outcomes, i)
    for name in ranking:
        option = outcomes.option(name)
        same_temperature = float(option.config.get("temperature", np.nan)) == outcomes.predictor.temperature
        if option.kind == "sampling" and same_temperature:
            cell = outcomes.cells[(name, n)]
            # The probe is among the N samples; online, the PRM scores all N (even for a vote).
            return float(cell.accuracy[i]), float(cell.generated_tokens[i]), n * prm_per_sample
        width = int(option.config.get("width", 1)) if option.kind == "stepwise" else 1
        room = (n - probe) // width * width
        recorded = [b for (other, b) in outcomes.cells if other == name and b <= room]
        if recorded:
            cell = outcomes.cells[(name, max(recorded))]
            return (
                float(cell.accuracy[i]),
                float(cell.generated_tokens[i]) + probe_generated,
                float(cell.verifier_tokens[i]) + probe * prm_per_sample,
            )
    raise ValueError(f"no option fits N={n} after a probe of {probe}")


def _prm_tokens_per_sample(outcomes: Outcomes, i: int) -> float:
    assert outcomes.predictor is not None
    name = f"{outcomes.predictor.label}/weighted"
    largest = max(b for (other, b) in outcomes.cells if other == name)
    return float(outcomes.cells[(name, largest)].verifier_tokens[i]) / largest
