"""Replay the online `ComputeOptimal` strategy on recorded samples, cross-validated.

What the strategy does, offline: thresholds and per-level rankings are fitted on the
training folds exactly as `fit_policy` fits them on a whole experiment (on the probe
statistic, `ttsearch.study.optimal.probe_bins`), and a held-out problem is binned by the
mean score of the first `probe` samples of one seed of the predictor run, then gets the
best option that fits the budget left. Results are averaged over the predictor's seeds
and the problems.

Which run's accuracy counts: a sampling option at the probe's temperature pools the probe
(online its N samples include the probe's), so it is graded at N on the probe's own seed
(mean over that seed's disjoint groups; only the first group holds the probe, so this
understates the pooling a little). Any other option is graded on the other seeds' runs
(runs of one seed share their first samples; with one seed, on that seed), at the largest
budget it was recorded at that fits N - probe (stepwise: a multiple of its width), plus the
probe's tokens. A stepwise run at exactly N - probe was usually not recorded, so this
under-states stepwise choices.
"""

from __future__ import annotations

import numpy as np

from ttsearch.strategies.registry import budget_unit
from ttsearch.study.optimal.bins import fit_bins
from ttsearch.study.optimal.crossval import CurvePoint, assign_folds, rank_by_level
from ttsearch.study.optimal.outcomes import Cell, Outcomes
from ttsearch.study.optimal.probe_bins import graded_seeds, levels_of, probe_binner


def replay_online(
    outcomes: Outcomes, *, probe: int = 2, folds: int = 5, seed: int = 0, fold_of: np.ndarray | None = None
) -> tuple[CurvePoint, ...]:
    """The online strategy's accuracy and tokens per budget N > probe (empty without a predictor).

    :param fold_of: the fold of each problem (default: stratified by oracle pass@1 levels).
    """
    if probe < 1:
        raise ValueError(f"probe must be >= 1, got {probe}")
    if outcomes.predictor is None or not outcomes.predictor_scores:
        return ()
    if any(scores.shape[1] < probe for scores in outcomes.predictor_scores):
        raise ValueError(f"a probe of {probe} needs at least {probe} recorded samples per problem")
    size = len(outcomes.problems)
    if fold_of is None:
        levels = fit_bins("oracle", outcomes.pass_rate, keys=outcomes.problems).levels
        fold_of = assign_folds(levels, min(folds, size), seed=seed)
    binner = probe_binner(outcomes, probe)
    first_probes = {
        s: scores[:, :probe].mean(axis=1) for s, scores in zip(_predictor_seeds(outcomes), outcomes.predictor_scores)
    }
    everyone = np.arange(size)
    points = []
    for n in outcomes.budgets:
        if n <= probe:
            continue
        totals = np.zeros((3, size))  # accuracy, generated, PRM tokens per problem
        for f in sorted(set(fold_of.tolist())):
            train, test = everyone[fold_of != f], everyone[fold_of == f]
            membership = binner(train)
            rankings = rank_by_level(outcomes, n, membership, train)
            for probe_seed, values in first_probes.items():
                levels = levels_of(values, membership.thresholds)
                for i in test:
                    result = _first_fitting(outcomes, rankings[int(levels[i])], n, probe, i, probe_seed)
                    totals[:, i] += np.asarray(result) / len(first_probes)
        points.append(
            CurvePoint(
                n=n,
                accuracy=float(totals[0].mean()),
                generated_tokens=float(totals[1].mean()),
                verifier_tokens=float(totals[2].mean()),
                probe_tokens=float(_probe_cost(outcomes, probe).mean()),
            )
        )
    return tuple(points)


def probe_cost(outcomes: Outcomes, probe: int) -> tuple[np.ndarray, np.ndarray]:
    """(generated, PRM computed) tokens per problem of a probe of `probe` predictor samples."""
    assert outcomes.predictor_tokens is not None and outcomes.predictor_prm_tokens is not None
    return probe * outcomes.predictor_tokens, probe * outcomes.predictor_prm_tokens


def _probe_cost(outcomes: Outcomes, probe: int) -> np.ndarray:
    generated, verifier = probe_cost(outcomes, probe)
    return np.asarray(generated + verifier)


def _predictor_seeds(outcomes: Outcomes) -> tuple[int, ...]:
    return outcomes.predictor_seeds or tuple(range(len(outcomes.predictor_scores)))


def _first_fitting(
    outcomes: Outcomes, ranking: list[str], n: int, probe: int, i: int, probe_seed: int
) -> tuple[float, float, float]:
    """(accuracy, generated tokens, PRM tokens) of the best option that fits, probe included."""
    assert outcomes.predictor is not None and outcomes.predictor_prm_tokens is not None
    generated, verifier = (float(x[i]) for x in probe_cost(outcomes, probe))
    per_sample = float(outcomes.predictor_prm_tokens[i])
    for name in ranking:
        option = outcomes.option(name)
        same_temperature = float(option.config.get("temperature", np.nan)) == outcomes.predictor.temperature
        if option.kind == "sampling" and same_temperature:
            cell = outcomes.cells[(name, n)]
            # The probe is among the N samples; online, the PRM scores all N (even for a vote).
            return float(cell.accuracy_at(probe_seed)[i]), float(cell.generated_tokens[i]), n * per_sample
        unit = budget_unit(option.strategy, option.config) if option.kind == "stepwise" else 1
        room = (n - probe) // unit * unit
        recorded = [b for (other, b) in outcomes.cells if other == name and b <= room]
        if recorded:
            cell = outcomes.cells[(name, max(recorded))]
            return (
                _accuracy_elsewhere(outcomes, cell, i, probe_seed),
                float(cell.generated_tokens[i]) + generated,
                float(cell.verifier_tokens[i]) + verifier,
            )
    raise ValueError(f"no option fits N={n} after a probe of {probe}")


def _accuracy_elsewhere(outcomes: Outcomes, cell: Cell, i: int, probe_seed: int) -> float:
    """Problem i's accuracy over the seeds other than the probe's (its seed mean with one seed)."""
    others = [s for s in graded_seeds(outcomes) if s != probe_seed]
    if not others:
        return float(cell.accuracy[i])
    return float(np.mean([cell.accuracy_at(s)[i] for s in others]))
