"""The compute-optimal analysis of an experiment, as data: what the report shows.

`analyse_experiment(dirs)` loads the records, builds the per-problem outcomes, bins the
problems by three heuristics and cross-validates the per-bin choice against the best
single option (one fold assignment for every curve, stratified by oracle pass@1):

* oracle (gold answers, same samples): the paper's upper reference, pass@1 over the very
  samples the runs are graded on (a leak, kept as the reference and labelled so);
* oracle (gold answers, another seed's samples): pass@1 from the seeds other than the one
  graded, so the oracle curve is honest too (needs 2 seeds);
* predicted: the PRM probe, binned as `ComputeOptimal` bins a new problem (the mean score
  of `probe` samples of another seed, thresholds fitted on the training folds'
  probe values), with the probe's cost (generated + PRM tokens) charged to every point.

Tokens are generated + PRM tokens computed (`ttsearch.study.optimal.outcomes`); PRM tokens
read from a cache are shown apart. It also measures the budget best-of-N needs to match the compute-optimal
accuracy, and (beyond the paper) replays the adaptive budget reallocation across the batch
against uniform best-of-N at equal total samples (`ttsearch.study.optimal.adaptive`). `format_analysis` renders it as text; `ttsearch.study.optimal.plot` draws it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ttsearch.errors import ExperimentError
from ttsearch.study.optimal.adaptive import AdaptivePoint, simulate_adaptive
from ttsearch.study.optimal.bins import fit_bins
from ttsearch.study.optimal.crossval import CrossValidation, CurvePoint, assign_folds, cross_validate, fixed_curve
from ttsearch.study.optimal.outcomes import Outcomes, build_outcomes
from ttsearch.study.optimal.probe import probe_cost, replay_online
from ttsearch.study.optimal.probe_bins import held_out_oracle_binner, probe_binner
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
    prm_tokens_source: str = "computed"  # how PRM tokens were counted (`Outcomes.prm_tokens_source`)

    def label(self, heuristic: str) -> str:
        """How text and plots name a heuristic's bins."""
        cv = self.cross_validations.get(heuristic)
        return heuristic_label(heuristic, self.probe, leak_free=cv is None or cv.leak_free)


def heuristic_label(heuristic: str, probe: int, *, leak_free: bool = True) -> str:
    if heuristic == "oracle":
        return "oracle (gold answers, same samples)"
    if heuristic == "oracle_held_out":
        return "oracle (gold answers, another seed's samples)"
    if heuristic == "predicted":
        source = "another seed's samples" if leak_free else "the same seed: only one recorded"
        return f"predicted (PRM probe of {probe}, {source}; no gold answers)"
    return heuristic


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
    oracle = fit_bins("oracle", outcomes.pass_rate, keys=outcomes.problems)
    # One partition for every curve: the heuristics are compared on the same held-out problems.
    fold_of = assign_folds(oracle.levels, folds, seed=seed)
    cvs: dict[str, CrossValidation] = {"oracle": cross_validate(outcomes, oracle, fold_of=fold_of)}
    held_out = held_out_oracle_binner(outcomes)
    if held_out is not None:
        cvs["oracle_held_out"] = cross_validate(outcomes, held_out, fold_of=fold_of, heuristic="oracle_held_out")
    if outcomes.predictor is not None and outcomes.predictor_scores:
        cvs["predicted"] = cross_validate(
            outcomes,
            probe_binner(outcomes, probe),
            fold_of=fold_of,
            heuristic="predicted",
            probe_cost=probe_cost(outcomes, probe),
        )
    online = replay_online(outcomes, probe=probe, fold_of=fold_of)
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
        prm_tokens_source=outcomes.prm_tokens_source,
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
        verifier_cached_tokens=0.0
        if cell.verifier_cached_tokens is None
        else float(cell.verifier_cached_tokens.mean()),
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
    lines += _curve_table(analysis)
    lines += _cached_table(analysis)
    for h, cv in analysis.cross_validations.items():
        lines += _bin_table(analysis.label(h), cv)
    for h, matches in analysis.matches.items():
        lines += ["", f"budget {analysis.reference} needs to match compute-optimal, {analysis.label(h)}"]
        lines += [_match_line(m) for m in matches]
    lines += _adaptive_table(analysis)
    lines += ["", *(f"- {note}" for note in _notes(analysis))]
    return "\n".join(lines)


def _curve_table(analysis: ComputeOptimalAnalysis) -> list[str]:
    budgets = sorted({p.n for f in analysis.fixed for p in f.points})
    rows: list[tuple[str, Sequence[CurvePoint]]] = [(f.option, f.points) for f in analysis.fixed]
    if analysis.cross_validations:
        first = next(iter(analysis.cross_validations.values()))
        rows.append(("best single option (CV: chosen on the training folds)", first.best_fixed))
    rows += [(f"compute-optimal, {analysis.label(h)} (CV)", cv.optimal) for h, cv in analysis.cross_validations.items()]
    if analysis.online:
        rows.append((f"ComputeOptimal online, probe {analysis.probe} (CV)", analysis.online))
    rows += [(f"{curve.option} (as run)", curve.points) for curve in analysis.measured]
    width = 4 + max(len(name) for name, _ in rows)
    header = f"{'method':{width}s}" + "".join(f"{'N=' + str(n):>8s}" for n in budgets)
    lines = [
        "",
        "accuracy (%) by budget N; [generated + PRM computed tokens per problem, a probe's included]",
        header,
        "-" * len(header),
    ]
    for name, points in rows:
        by_n = {p.n: p for p in points}
        lines.append(
            f"{name:{width}s}" + "".join(f"{100 * by_n[n].accuracy:8.1f}" if n in by_n else " " * 8 for n in budgets)
        )
        lines.append(
            " " * width
            + "".join(f"{'[' + _tokens(by_n[n].total_tokens) + ']':>8s}" if n in by_n else " " * 8 for n in budgets)
        )
    return lines


def _cached_table(analysis: ComputeOptimalAnalysis) -> list[str]:
    """PRM tokens read from the PRM's prefix cache or score memo: sent, but not computed."""
    curves = [f for f in analysis.fixed if f.as_configured and any(p.verifier_cached_tokens > 0 for p in f.points)]
    if not curves:
        return []
    budgets = sorted({p.n for f in curves for p in f.points})
    width = 4 + max(len(f.option) for f in curves)
    lines = ["", "PRM tokens per problem read from cache (not in the totals above)"]
    lines.append(f"{'method':{width}s}" + "".join(f"{'N=' + str(n):>8s}" for n in budgets))
    for f in curves:
        by_n = {p.n: p for p in f.points}
        cells = (f"{_tokens(by_n[n].verifier_cached_tokens):>8s}" if n in by_n else " " * 8 for n in budgets)
        lines.append(f"{f.option:{width}s}" + "".join(cells))
    return lines


def _bin_table(label: str, cv: CrossValidation) -> list[str]:
    lines = ["", f"per-bin choice, {label} (level 1 = easiest; winner chosen on all problems of the bin)"]
    lines.append(
        f"{'level':>5s} {'N':>4s} {'#':>5s}  {'winner':28s} {'acc':>6s} {'margin':>7s} {'CV acc':>7s}  runner-up"
    )
    for r in cv.table:
        lines.append(
            f"{r.level:5d} {r.n:4d} {r.num_problems:5.1f}  {r.winner:28s} {100 * r.accuracy:6.1f} "
            f"{100 * r.margin:7.1f} {100 * r.cv_accuracy:7.1f}  {r.runner_up or '-'}"
        )
    return lines


def _match_line(m: Match) -> str:
    if m.reference_n is None:
        return f"  N={m.n}: {100 * m.target:.1f}% not reached at any recorded budget"
    ratio = f", {m.compute_ratio:.2f}x the tokens" if m.compute_ratio is not None else ""
    return f"  N={m.n}: {100 * m.target:.1f}% reached at N={m.reference_n} ({m.reference_n / m.n:.2g}x{ratio})"


def _adaptive_table(analysis: ComputeOptimalAnalysis) -> list[str]:
    if not analysis.adaptive:
        return []
    lines = [
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
    return lines


def _notes(analysis: ComputeOptimalAnalysis) -> list[str]:
    notes = [
        f"PRM tokens: {analysis.prm_tokens_source}. Runs of one experiment share the PRM's score memo and "
        "prefix cache, so a run's computed tokens depend on the runs before it (docs/methods/results.md).",
        "oracle (gold answers, same samples) bins each problem by the pass rate of the very samples it is "
        "graded on: the paper's upper reference, optimistic by construction.",
    ]
    if "oracle_held_out" not in analysis.cross_validations:
        notes.append("no held-out-sample oracle: it needs sampling runs at 2 seeds or more.")
    predicted = analysis.cross_validations.get("predicted")
    if predicted is not None:
        notes.append(
            f"predicted bins: the mean PRM score of {analysis.probe} samples (thresholds fitted on the training "
            "folds' probe values), from another seed than the run graded"
            + ("" if predicted.leak_free else " where there is one (one seed here: the same seed's first probe)")
            + "; the probe's generated and PRM tokens are charged to every point."
        )
    return notes


def _tokens(value: float) -> str:
    return f"{value / 1000:.1f}k" if value >= 1000 else f"{value:.0f}"
