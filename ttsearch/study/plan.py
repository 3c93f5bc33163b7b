"""A recipe's runs: every (strategy entry, N, seed) point, with its strategy object built.

Sampling strategies (majority, best-of-N: N independent samples) run once per seed at the
entry's largest N and are reported at every N of the entry, each budget k the mean over
the disjoint groups of k samples of that one run: budgets are never resampled. Stepwise
strategies (beam, DVTS, lookahead, ...) run once per (N, seed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ttsearch.core.strategy import Strategy
from ttsearch.errors import RecipeError
from ttsearch.evaluation.metrics import BudgetKind
from ttsearch.strategies.catalog import option_fields
from ttsearch.strategies.registry import STRATEGIES, budget_kind, make_strategy
from ttsearch.study.optimal.policy_table import load_policy
from ttsearch.study.recipe import Recipe, StrategyEntry

__all__ = ["PlannedRun", "plan_runs"]


@dataclass(frozen=True)
class PlannedRun:
    run_id: str  # "<label>-n<N>-s<seed>": the results file's name
    label: str
    strategy: Strategy
    kind: BudgetKind
    n: int
    seed: int
    budgets: tuple[int, ...]  # the N values this run is reported at
    config: dict[str, Any]  # the strategy's options as given (recorded in the manifest)

    @property
    def strategy_name(self) -> str:
        return self.config["strategy"]

    def manifest_entry(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "label": self.label,
            "strategy": self.strategy_name,
            "kind": self.kind,
            "n": self.n,
            "seed": self.seed,
            "budgets": list(self.budgets),
            "config": self.config,
            "generation_budget": self.strategy.generation_budget,
        }


def plan_runs(recipe: Recipe) -> list[PlannedRun]:
    """Every run of the recipe, in recipe order (entry, N, seed); builds each strategy, so
    a bad hyperparameter (N not a multiple of the width, an unknown reduction, a missing
    policy table) is reported here, before any engine starts.

    :raises RecipeError: naming the entry, N and the problem.
    """
    runs: list[PlannedRun] = []
    for entry in recipe.strategies:
        kind = budget_kind(entry.strategy)
        if STRATEGIES[entry.strategy].needs_verifier and recipe.prm is None:
            raise RecipeError(f"strategy entry {entry.label!r} ({entry.strategy}) needs a PRM: add a prm: section")
        if kind == "sampling":
            bad = [n for n in entry.per_n if n != max(entry.n)]
            if bad:
                raise RecipeError(
                    f"strategy entry {entry.label!r}: per_n {bad}: a sampling strategy runs once at its largest "
                    f"N ({max(entry.n)}) and is read at the smaller budgets, so only per_n {max(entry.n)} applies"
                )
            points = [(max(entry.n), tuple(entry.n))]
        else:
            points = [(n, (n,)) for n in entry.n]
        for n, budgets in points:
            options = _options(recipe, entry, n)
            strategy = _build(entry, n, options)
            config = {"strategy": entry.strategy, "n": n, **options}
            for seed in recipe.seeds:
                runs.append(
                    PlannedRun(
                        run_id=f"{entry.label}-n{n}-s{seed}",
                        label=entry.label,
                        strategy=strategy if seed == recipe.seeds[0] else _build(entry, n, options),
                        kind=kind,
                        n=n,
                        seed=seed,
                        budgets=budgets,
                        config=config,
                    )
                )
    return runs


def _options(recipe: Recipe, entry: StrategyEntry, n: int) -> dict[str, Any]:
    """The entry's options at N: the recipe's sampling defaults, the entry's fields, then per_n."""
    fields = option_fields(STRATEGIES[entry.strategy])
    options: dict[str, Any] = {}
    if "temperature" in fields:
        options["temperature"] = recipe.sampling.temperature
    if "top_p" in fields:
        options["top_p"] = recipe.sampling.top_p
    options.update(entry.options)
    options.update(entry.per_n.get(n, {}))
    if entry.strategy == "compute_optimal" and isinstance(options.get("policy"), str):
        # The policy table's path, as written, is relative to the recipe file.
        options["policy"] = str(recipe.resolve_path(options["policy"]))
    return options


def _build(entry: StrategyEntry, n: int, options: dict[str, Any]) -> Strategy:
    try:
        return make_strategy(entry.strategy, n=n, **_read_files(entry, options))
    except FileNotFoundError as error:
        raise RecipeError(f"strategy entry {entry.label!r} at n={n}: {error}") from None
    except (ValueError, TypeError) as error:
        raise RecipeError(f"strategy entry {entry.label!r} ({entry.strategy}) at n={n}: {error}") from None


def _read_files(entry: StrategyEntry, options: dict[str, Any]) -> dict[str, Any]:
    """The options as the strategy takes them: files the recipe names, read (strategies do
    no I/O); the manifest keeps the path."""
    if entry.strategy == "compute_optimal" and isinstance(options.get("policy"), str):
        path = options["policy"]
        return {**options, "policy": load_policy(path), "policy_file": path}
    return options
