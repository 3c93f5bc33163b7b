"""The compute-optimal analysis of an experiment, as data: what the report shows.

`analyse_experiment(dirs)` loads the records, builds the per-problem outcomes, bins the
problems by both heuristics and cross-validates the per-bin choice against the best
single option, measures the budget best-of-N needs to match the compute-optimal
accuracy, and (beyond the paper) replays the adaptive budget reallocation across the batch
against uniform best-of-N at equal total samples (`ttsearch.study.optimal.adaptive`). `format_analysis` renders it as text; `ttsearch.study.optimal.plot` draws it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ttsearch.errors import ExperimentError
from ttsearch.study.optimal.adaptive import AdaptivePoint, simulate_adaptive
from ttsearch.study.optimal.bins import Heuristic, fit_bins
from ttsearch.study.optimal.crossval import CrossValidation, CurvePoint, cross_validate, fixed_curve
from ttsearch.study.optimal.outcomes import Outcomes, build_outcomes
from ttsearch.study.optimal.probe import replay_online
from ttsearch.study.optimal.records import RunRecords, load_runs


@dataclass(frozen=True, slots=True)
class FixedCurve:
    """One option used for every problem."""

    option: str  # "label/selection"
    as_configured: bool  # the selection its recipe entry configured (the curve a plot shows)
    points: tuple[CurvePoint, ...]


@dataclass(frozen=True, slots=True)
class Match:
    """The smallest recorded budget at which the reference option reaches a target accuracy."""

    n: int  # the compute-optimal budget
    target: float  # compute-optimal accuracy at n
    reference_n: int | None  # None: not reached at any recorded budget
    reference_accuracy: float | None
    compute_ratio: float | None  # reference total tokens / compute-optimal total tokens


@dataclass(frozen=True, slots=True)
class ComputeOptimalAnalysis:
    num_problems: int
    num_seeds: int
    dropped: tuple[str, ...]
    fixed: tuple[FixedCurve, ...]
    cross_validations: dict[str, CrossValidation]  # by heuristic
    online: tuple[CurvePoint, ...]  # `ComputeOptimal` replayed with a real probe (empty without a predictor)
    measured: tuple[FixedCurve, ...]  # compute_optimal runs in the experiment, as they ran
    probe: int
    reference: str | None  # the option matched against (best-of-N weighted, when recorded)
    matches: dict[str, tuple[Match, ...]]  # by heuristic
    predictor: str | None  # the run whose PRM scores predicted difficulty
    # Adaptive reallocation vs uniform best-of-N on the predictor's samples, equal total
    # samples per batch (empty without the runs, or without a scored sampling entry).
    adaptive: tuple[AdaptivePoint, ...] = ()


def analyse_experiment(
    dirs: Sequence[str | Path], *, folds: int = 5, seed: int = 0, probe: int = 2
) -> ComputeOptimalAnalysis:
    """Load experiment directories (shards merge) and analyse them."""
    runs = load_runs(dirs)
    return analyse(build_outcomes(runs), folds=folds, seed=seed, probe=probe, runs=runs)


def analyse(
    outcomes: Outcomes,
    *,
    folds: int = 5,
    seed: int = 0,
    probe: int = 2,
    runs: Sequence[RunRecords] | None = None,
) -> ComputeOptimalAnalysis:
    """The analysis of `outcomes` (`build_outcomes(runs)`); with `runs`, also the adaptive
    reallocation replayed on the predictor entry's recorded samples."""
    folds = min(folds, len(outcomes.problems))
    fixed = tuple(
        FixedCurve(o.name, o.selection == o.config.get("selection", o.selection), fixed_curve(outcomes, o.name))
        for o in outcomes.options
    )
    statistics: dict[Heuristic, np.ndarray] = {"oracle": outcomes.pass_rate}
    if outcomes.mean_score is not None:
        statistics["predicted"] = outcomes.mean_score
    cvs: dict[str, CrossValidation] = {
        h: cross_validate(outcomes, fit_bins(h, values, keys=outcomes.problems), folds=folds, seed=seed)
        for h, values in statistics.items()
    }
    online = replay_online(outcomes, probe=probe, folds=folds, seed=seed)
    reference = _reference(outcomes)
    matches: dict[str, tuple[Match, ...]] = {}
    if reference is not None:
        curve = next(f.points for f in fixed if f.option == reference)
        targets: dict[str, tuple[CurvePoint, ...]] = {h: cv.optimal for h, cv in cvs.items()}
        if online:
            targets[f"online, probe {probe}"] = online
        matches = {h: tuple(_match(point, curve) for point in points) for h, points in targets.items()}
    return ComputeOptimalAnalysis(
        num_problems=len(outcomes.problems),
        num_seeds=outcomes.num_seeds,
        dropped=outcomes.dropped,
        fixed=fixed,
        cross_validations=cvs,
        online=online,
        measured=tuple(
            FixedCurve(label, True, tuple(_cell_point(outcomes, label, n) for n in sorted(ns)))
            for label, ns in _labels_and_budgets(outcomes.delegating).items()
        ),
        probe=probe,
        reference=reference,
        matches=matches,
        predictor=None if outcomes.predictor is None else outcomes.predictor.label,
        adaptive=_adaptive(outcomes, runs or ()),
    )


def _adaptive(outcomes: Outcomes, runs: Sequence[RunRecords]) -> tuple[AdaptivePoint, ...]:
    """`simulate_adaptive` on the predictor entry's runs, at every budget N >= 2 its
    samples cover (at N = 1 there is nothing to move)."""
    if outcomes.predictor is None:
        return ()
    source = [r for r in runs if r.label == outcomes.predictor.label]
    recorded = [len(p.candidates) for r in source for p in r.problems.values() if p.error is None and p.candidates]
    if not source or not recorded:
        return ()
    budgets = [n for n in outcomes.budgets if 2 <= n <= min(recorded)]
    try:
        return simulate_adaptive(source, budgets) if budgets else ()
    except (ValueError, ExperimentError):  # e.g. a run of the entry without PRM scores
        return ()


def _labels_and_budgets(cells: Mapping[tuple[str, int], object]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for label, n in cells:
        out.setdefault(label, []).append(n)
    return out


def _cell_point(outcomes: Outcomes, label: str, n: int) -> CurvePoint:
    cell = outcomes.delegating[(label, n)]
    return CurvePoint(
        n=n,
        accuracy=float(cell.accuracy.mean()),
        generated_tokens=float(cell.generated_tokens.mean()),
        verifier_tokens=float(cell.verifier_tokens.mean()),
    )


def _reference(outcomes: Outcomes) -> str | None:
    for strategy, selection in (("best_of_n", "weighted"), ("majority", "majority")):
        for option in outcomes.options:
            if option.strategy == strategy and option.selection == selection:
                return option.name
    return None


def _match(point: CurvePoint, curve: Sequence[CurvePoint]) -> Match:
    for ref in curve:
        if ref.accuracy >= point.accuracy - 1e-12:
            ratio = ref.total_tokens / point.total_tokens if point.total_tokens > 0 else None
            return Match(point.n, point.accuracy, ref.n, ref.accuracy, ratio)
    return Match(point.n, point.accuracy, None, None, None)


def format_analysis(analysis: ComputeOptimalAnalysis) -> str:
    """Curves, per-bin tables and the matching budget, as plain text."""
    left_out = f" ({len(analysis.dropped)} problem(s) missing from a run or failed in one: left out)"
    lines = [
        f"compute-optimal scaling: {analysis.num_problems} problems, {analysis.num_seeds} seed(s), "
        f"choices cross-validated over problems" + (left_out if analysis.dropped else "")
    ]
    budgets = sorted({p.n for f in analysis.fixed for p in f.points})
    width = 4 + max([len(f.option) for f in analysis.fixed] + [len("best single option, predicted folds (CV)")])
    header = f"{'method':{width}s}" + "".join(f"{'N=' + str(n):>8s}" for n in budgets)
    lines += ["", "accuracy (%) by budget N; [generated+PRM tokens per problem]", header, "-" * len(header)]

    def row(name: str, points: Sequence[CurvePoint]) -> None:
        by_n = {p.n: p for p in points}
        accuracy = (f"{100 * by_n[n].accuracy:8.1f}" if n in by_n else " " * 8 for n in budgets)
        tokens = (f"{'[' + _tokens(by_n[n].total_tokens) + ']':>8s}" if n in by_n else " " * 8 for n in budgets)
        lines.append(f"{name:{width}s}" + "".join(accuracy))
        lines.append(" " * width + "".join(tokens))

    for f in analysis.fixed:
        row(f.option, f.points)
    for h, cv in analysis.cross_validations.items():
        row(f"best single option, {h} folds (CV)", cv.best_fixed)
        row(f"compute-optimal, {h} bins (CV)", cv.optimal)
    if analysis.online:
        row(f"ComputeOptimal online, probe {analysis.probe} (CV)", analysis.online)
    for curve in analysis.measured:
        row(f"{curve.option} (as run)", curve.points)
    for h, cv in analysis.cross_validations.items():
        lines += ["", f"per-bin choice, {h} difficulty (level 1 = easiest; winner chosen on all problems of the bin)"]
        lines.append(
            f"{'level':>5s} {'N':>4s} {'#':>4s}  {'winner':28s} {'acc':>6s} {'margin':>7s} {'CV acc':>7s}  runner-up"
        )
        for r in cv.table:
            lines.append(
                f"{r.level:5d} {r.n:4d} {r.num_problems:4d}  {r.winner:28s} {100 * r.accuracy:6.1f} "
                f"{100 * r.margin:7.1f} {100 * r.cv_accuracy:7.1f}  {r.runner_up or '-'}"
            )
    for h, matches in analysis.matches.items():
        lines += ["", f"budget {analysis.reference} needs to match compute-optimal ({h})"]
        for m in matches:
            if m.reference_n is None:
                lines.append(f"  N={m.n}: {100 * m.target:.1f}% not reached at any recorded budget")
            else:
                ratio = f", {m.compute_ratio:.2f}x the tokens" if m.compute_ratio is not None else ""
                times = m.reference_n / m.n
                lines.append(f"  N={m.n}: {100 * m.target:.1f}% reached at N={m.reference_n} ({times:.2g}x{ratio})")
    if analysis.adaptive:
        lines += [
            "",
            f"adaptive budget across the batch vs uniform best-of-N ({analysis.predictor}, weighted), "
            "equal total samples (beyond the paper; replayed on the recorded samples)",
            f"{'N':>4s} {'uniform':>8s} {'adaptive':>9s} {'gain':>6s}  {'tokens uniform':>14s} "
            f"{'adaptive':>9s}  most samples on one problem",
        ]
        for a in analysis.adaptive:
            lines.append(
                f"{a.n:4d} {100 * a.uniform_accuracy:8.1f} {100 * a.adaptive_accuracy:9.1f} "
                f"{100 * (a.adaptive_accuracy - a.uniform_accuracy):+6.1f}  {_tokens(a.uniform_tokens):>14s} "
                f"{_tokens(a.adaptive_tokens):>9s}  {a.max_samples}"
            )
    return "\n".join(lines)


def _tokens(value: float) -> str:
    return f"{value / 1000:.1f}k" if value >= 1000 else f"{value:.0f}"
