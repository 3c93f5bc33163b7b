"""Per-problem outcomes of every (strategy config, selection, N), averaged over seeds.

The table the compute-optimal analysis works on: for each option (a run label with one
selection method) and budget N, each problem's accuracy in [0, 1] and the tokens it cost.
Budgets follow docs/records.md: a sampling run at n answers budget k <= n by the mean over its
n // k disjoint groups of k consecutive candidates (sample order); a stepwise run answers
only its own N. Every number is then averaged over the seeds that ran it.

Also per problem: the two difficulty statistics of arXiv 2408.03314 over the samples of
the sampling runs (oracle pass@1, and the mean PRM score of the predictor run), and, per
seed, what the leak-free bins of `ttsearch.study.optimal.probe_bins` need: the predictor
run's scores in sample order and the sampling runs' correct-sample counts.

PRM tokens are the tokens the PRM *computed* (`verifier_computed_tokens`, docs/records.md):
records without that field fall back to `verifier_tokens - verifier_cached_tokens`, or to
`verifier_tokens` (sent, cached included) without cache counts; `prm_tokens_source` says
which. Cached tokens are kept apart: they are not the cost.

Only problems that every run finished without error are compared (like the report, which
leaves failed problems out of accuracy); the others are listed in `dropped`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ttsearch.errors import ExperimentError
from ttsearch.evaluation.aggregation import SelectionMethod, candidate_keys, select_by_keys
from ttsearch.study.optimal.records import Kind, ProblemRecord, RunRecords

DELEGATING = ("compute_optimal", "ComputeOptimal")  # registry and class names of runs never offered as options


@dataclass(frozen=True, slots=True)
class Option:
    """One thing the compute-optimal policy can choose: a recorded strategy config and a selection."""

    label: str  # the recipe's strategy entry
    strategy: str  # registry name
    config: dict[str, Any] = field(hash=False, compare=False)
    selection: SelectionMethod
    kind: Kind

    @property
    def name(self) -> str:
        return f"{self.label}/{self.selection}"


@dataclass(frozen=True, slots=True)
class Cell:
    """One option at one budget: per-problem arrays, in `Outcomes.problems` order."""

    accuracy: np.ndarray  # mean over seeds (and disjoint groups) of 1.0 solved / 0.0 not
    generated_tokens: np.ndarray  # policy tokens generated per problem
    verifier_tokens: np.ndarray  # PRM tokens computed per problem (the cost; module doc)
    verifier_cached_tokens: np.ndarray | None = None  # PRM tokens read from its caches (not in the cost)
    # Accuracy per seed (mean over disjoint groups), for bins drawn from another seed's samples.
    seed_accuracy: Mapping[int, np.ndarray] = field(default_factory=dict)

    def accuracy_at(self, seed: int) -> np.ndarray:
        """Per-problem accuracy of the run at `seed`; the seed mean where the option has no such run."""
        return self.seed_accuracy.get(seed, self.accuracy)


@dataclass(frozen=True, slots=True)
class SeedCounts:
    """Correct samples and samples per (seed, problem) of the sampling runs: the held-out
    oracle bins a seed's problems from the other seeds' pass rate."""

    seeds: tuple[int, ...]
    correct: np.ndarray  # (seeds, problems)
    total: np.ndarray  # (seeds, problems)

    def pass_rate_without(self, seed: int) -> np.ndarray | None:
        """Pass@1 per problem over every seed but `seed` (None when no other seed has samples)."""
        others = [k for k, s in enumerate(self.seeds) if s != seed]
        total = self.total[others].sum(axis=0) if others else np.zeros(0)
        if not others or (total == 0).any():
            return None
        return np.asarray(self.correct[others].sum(axis=0) / total, dtype=float)


@dataclass(frozen=True, slots=True)
class Predictor:
    """Where the model-predicted difficulty comes from: a scored sampling run's config."""

    label: str
    reduction: str  # how its candidates' step scores were reduced to one score
    temperature: float


@dataclass(frozen=True, slots=True)
class Outcomes:
    problems: tuple[str, ...]  # unique ids present in every option's runs
    budgets: tuple[int, ...]  # every recorded N, increasing
    options: tuple[Option, ...]
    cells: dict[tuple[str, int], Cell]  # (option name, N) -> cell; only the budgets the option has
    pass_rate: np.ndarray  # oracle pass@1 per problem over the sampling runs' samples
    mean_score: np.ndarray | None  # mean PRM score per problem over the predictor's samples
    predictor: Predictor | None  # None when no sampling run was scored by the PRM
    num_seeds: int
    dropped: tuple[str, ...]  # problems left out: missing from some run, or failed in one
    # Per seed of the predictor run: its candidates' scores, shape (problems, n), sample
    # order, so a probe of p samples can be replayed (`ttsearch.study.optimal.probe`).
    predictor_scores: tuple[np.ndarray, ...] = ()
    predictor_tokens: np.ndarray | None = None  # mean generated tokens of one predictor sample, per problem
    predictor_seeds: tuple[int, ...] = ()  # the seed of each `predictor_scores` entry
    predictor_prm_tokens: np.ndarray | None = None  # PRM tokens computed per predictor sample, per problem
    seeds: tuple[int, ...] = ()  # every seed of the fixed runs (the seeds a run is graded at)
    oracle_counts: SeedCounts | None = None  # per-seed correct counts of the sampling runs
    prm_tokens_source: str = "computed"  # how PRM tokens were counted (module doc)
    # Runs of a strategy that picks per problem (compute_optimal itself): measured as run,
    # with each record's own selection, and never offered as an option. (label, N) -> cell.
    delegating: dict[tuple[str, int], Cell] = field(default_factory=dict)

    def option(self, name: str) -> Option:
        for option in self.options:
            if option.name == name:
                return option
        raise KeyError(name)

    def options_at(self, n: int) -> list[Option]:
        return [o for o in self.options if (o.name, n) in self.cells]


def build_outcomes(runs: Sequence[RunRecords]) -> Outcomes:
    """Average every run of every label over seeds (and disjoint groups for sampling).

    :raises ExperimentError: no runs, runs of one label that disagree on kind, or no
        problem common to all labels.
    """
    if not runs:
        raise ExperimentError("no runs to analyse")
    by_label: dict[str, list[RunRecords]] = defaultdict(list)
    delegating_runs: dict[str, list[RunRecords]] = defaultdict(list)
    for run in runs:
        (delegating_runs if run.strategy in DELEGATING else by_label)[run.label].append(run)
    if not by_label:
        raise ExperimentError("every run is a compute_optimal run; fitting needs fixed strategies")
    for label, group in by_label.items():
        if len({r.kind for r in group}) > 1:
            raise ExperimentError(f"label {label!r} has runs of different kinds")
    all_ids = set().union(*(r.problems for r in runs))
    failed = {uid for r in runs for uid, p in r.problems.items() if p.error is not None or not p.candidates}
    common = set.intersection(*(set(r.problems) for r in runs)) - failed
    if not common:
        raise ExperimentError("no problem finished without error in every run; nothing to compare")
    problems = tuple(sorted(common))
    options: list[Option] = []
    cells: dict[tuple[str, int], Cell] = {}
    for label in sorted(by_label):
        group = by_label[label]
        first = group[0]
        scored = all(c.scored for r in group for p in r.problems.values() for c in p.candidates)
        selections: tuple[SelectionMethod, ...] = ("majority", "naive", "weighted") if scored else ("majority",)
        for selection in selections:
            option = Option(label, first.strategy, first.config, selection, first.kind)
            options.append(option)
            for n in sorted({b for r in group for b in r.budgets}):
                cells[(option.name, n)] = _cell(group, n, selection, problems)
    fixed_runs = [r for group in by_label.values() for r in group]
    pass_rate, mean_score, predictor = _difficulty_statistics(fixed_runs, problems)
    scores, tokens, score_seeds, prm_tokens = _predictor_samples(fixed_runs, problems, predictor)
    delegating = {
        (label, n): _as_run_cell([r for r in group if r.n == n], problems)
        for label, group in delegating_runs.items()
        for n in sorted({r.n for r in group})
    }
    return Outcomes(
        problems=problems,
        budgets=tuple(sorted({n for _, n in cells})),
        options=tuple(options),
        cells=cells,
        pass_rate=pass_rate,
        mean_score=mean_score,
        predictor=predictor,
        num_seeds=max(len({r.seed for r in g}) for g in by_label.values()),
        dropped=tuple(sorted(all_ids - common)),
        predictor_scores=scores,
        predictor_tokens=tokens,
        delegating=delegating,
        predictor_seeds=score_seeds,
        predictor_prm_tokens=prm_tokens,
        seeds=tuple(sorted({r.seed for r in fixed_runs})),
        oracle_counts=_oracle_counts(fixed_runs, problems),
        prm_tokens_source=_prm_tokens_source(fixed_runs),
    )


def prm_tokens(usage: Mapping[str, float]) -> tuple[float, float]:
    """(PRM tokens computed, PRM tokens read from cache) of one record's usage (module doc)."""
    sent = usage.get("verifier_tokens", 0.0)
    cached = usage.get("verifier_cached_tokens", 0.0)
    computed = usage.get("verifier_computed_tokens")
    if computed is None:
        computed = sent - cached
    return computed, cached


def _prm_tokens_source(runs: Sequence[RunRecords]) -> str:
    """In words, how the PRM tokens of these runs were counted (the weakest fallback used)."""
    usages = [p.usage for r in runs for p in r.problems.values() if p.usage.get("verifier_tokens", 0.0) > 0]
    if all("verifier_computed_tokens" in u for u in usages):
        return "computed"
    if all("verifier_computed_tokens" in u or "verifier_cached_tokens" in u for u in usages):
        return "computed; verifier_tokens - verifier_cached_tokens where a record lacks verifier_computed_tokens"
    return (
        "computed where recorded; records without cache counts give verifier_tokens "
        "(sent, cached included: an overstatement)"
    )


def _oracle_counts(runs: Sequence[RunRecords], problems: tuple[str, ...]) -> SeedCounts:
    sampling = [r for r in runs if r.kind == "sampling"] or list(runs)
    seeds = tuple(sorted({r.seed for r in sampling}))
    correct = np.zeros((len(seeds), len(problems)))
    total = np.zeros((len(seeds), len(problems)))
    for run in sampling:
        k = seeds.index(run.seed)
        for i, uid in enumerate(problems):
            cands = run.problems[uid].candidates
            correct[k, i] += sum(c.correct for c in cands)
            total[k, i] += len(cands)
    return SeedCounts(seeds, correct, total)


def _as_run_cell(group: list[RunRecords], problems: tuple[str, ...]) -> Cell:
    """Seed means of each record's own grade and usage."""
    records = [[run.problems[uid] for uid in problems] for run in group]
    return Cell(
        accuracy=np.mean([[float(r.correct and r.error is None) for r in rs] for rs in records], axis=0),
        generated_tokens=np.mean([[r.usage.get("generated_tokens", 0.0) for r in rs] for rs in records], axis=0),
        verifier_tokens=np.mean([[prm_tokens(r.usage)[0] for r in rs] for rs in records], axis=0),
        verifier_cached_tokens=np.mean([[prm_tokens(r.usage)[1] for r in rs] for rs in records], axis=0),
    )


def _predictor_samples(
    runs: Sequence[RunRecords], problems: tuple[str, ...], predictor: Predictor | None
) -> tuple[tuple[np.ndarray, ...], np.ndarray | None, tuple[int, ...], np.ndarray | None]:
    """Per seed of the predictor run its scores (problems x samples, sample order), and per
    problem the generated and PRM-computed tokens of one of its samples (seed means)."""
    if predictor is None:
        return (), None, (), None
    source = sorted((r for r in runs if r.label == predictor.label), key=lambda r: r.seed)
    per_seed, seeds = [], []
    for run in source:
        records = [run.problems[uid] for uid in problems]
        if any(r.error is not None for r in records):
            continue  # a failed problem has no samples to replay
        width = min(len(r.candidates) for r in records)
        per_seed.append(np.array([[c.score for c in r.candidates[:width]] for r in records]))
        seeds.append(run.seed)
    tokens = np.array(
        [np.mean([c.num_tokens for r in source for c in r.problems[uid].candidates] or [0]) for uid in problems]
    )
    prm = np.array(
        [
            np.mean([prm_tokens(r.problems[uid].usage)[0] / max(1, len(r.problems[uid].candidates)) for r in source])
            for uid in problems
        ]
    )
    return tuple(per_seed), tokens, tuple(seeds), prm


def _cell(group: list[RunRecords], n: int, selection: SelectionMethod, problems: tuple[str, ...]) -> Cell:
    """Mean over the label's seeds of each problem's accuracy and tokens at budget n."""
    per_seed = [r for r in group if n in r.budgets]
    # (accuracy, generated, PRM computed, PRM cached) per run and problem
    table = np.array([[_score_record(run, run.problems[uid], n, selection) for uid in problems] for run in per_seed])
    by_seed: dict[int, list[np.ndarray]] = defaultdict(list)
    for run, rows in zip(per_seed, table):
        by_seed[run.seed].append(rows[:, 0])
    return Cell(
        accuracy=table[:, :, 0].mean(axis=0),
        generated_tokens=table[:, :, 1].mean(axis=0),
        verifier_tokens=table[:, :, 2].mean(axis=0),
        verifier_cached_tokens=table[:, :, 3].mean(axis=0),
        seed_accuracy={seed: np.mean(rows, axis=0) for seed, rows in by_seed.items()},
    )


def _score_record(
    run: RunRecords, record: ProblemRecord, n: int, selection: SelectionMethod
) -> tuple[float, float, float, float]:
    """(accuracy, generated tokens, PRM tokens computed, PRM tokens cached) of one record at budget n."""
    cands = record.candidates
    if run.kind == "stepwise":
        groups = [cands]
    else:
        if record.error is None and len(cands) < n:
            raise ExperimentError(f"run {run.run_id}: problem {record.unique_id} has {len(cands)} samples < N={n}")
        groups = [cands[g * n : (g + 1) * n] for g in range(len(cands) // n)]
    computed, cached = prm_tokens(record.usage)
    if record.error is not None or not groups or not cands:
        return 0.0, record.usage.get("generated_tokens", 0.0), computed, cached
    answers = [c.answer for c in cands]
    keys = candidate_keys(answers)
    solved = 0.0
    start = 0
    for chunk in groups:
        end = start + len(chunk)
        rewards = None if selection == "majority" else [c.score for c in chunk]
        chosen = select_by_keys(selection, answers[start:end], keys[start:end], rewards)
        solved += chosen is not None and chunk[chosen.index].correct
        start = end
    if run.kind == "stepwise":
        generated = record.usage.get("generated_tokens", float(sum(c.num_tokens for c in cands)))
        share = 1.0
    else:
        # One group of k samples costs its own tokens; the PRM's share is pro rata.
        generated = math.fsum(sum(c.num_tokens for c in chunk) for chunk in groups) / len(groups)
        share = n / len(cands)
    return solved / len(groups), generated, computed * share, cached * share


def _difficulty_statistics(
    runs: Sequence[RunRecords], problems: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray | None, Predictor | None]:
    sampling = [r for r in runs if r.kind == "sampling"] or list(runs)
    pass_rate = np.zeros(len(problems))
    for i, uid in enumerate(problems):
        flags = [c.correct for r in sampling for c in r.problems[uid].candidates]
        pass_rate[i] = sum(flags) / len(flags) if flags else 0.0
    scored_labels = sorted(
        {
            r.label
            for r in runs
            if r.kind == "sampling" and all(c.scored for p in r.problems.values() for c in p.candidates)
        }
    )
    if not scored_labels:
        return pass_rate, None, None
    label = scored_labels[0]  # one run's reduction, so the online probe can reproduce the statistic
    source = [r for r in runs if r.label == label]
    config = source[0].config
    predictor = Predictor(
        label=label, reduction=str(config.get("reduction", "last")), temperature=float(config.get("temperature", 0.8))
    )
    mean_score = np.zeros(len(problems))
    for i, uid in enumerate(problems):
        scores = [c.score for r in source for c in r.problems[uid].candidates]
        mean_score[i] = math.fsum(scores) / len(scores) if scores else 0.0
    return pass_rate, mean_score, predictor
