"""Model names to strategies: what a request's `model` (and its `search` options) runs.

Names any client can pick from a list:
- the policy's own name (the recipe's `policy.model`): plain sampling, no PRM;
- `<label>-<N>` for every strategy entry of the recipe and each of its N (`beam-16`):
  the presets `GET /v1/models` lists, with the entry's options (and `per_n`) as the recipe
  gives them. Another N of the same entry (`beam-64`) takes the same options;
- `<strategy>-<N>` for any other registry strategy (`rebase-16`): its defaults, with the
  recipe's sampling temperature / top_p.
A request's `search` object overrides options (`{"n": 64, "width": 8}`). Strategies are
built through the recipe planner (`plan_runs`), so a name, an option or a value is
checked exactly as a recipe's would be, and the message names it.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from ttsearch.core.strategy import Strategy
from ttsearch.errors import RecipeError
from ttsearch.serve.errors import ApiError
from ttsearch.strategies.registry import STRATEGIES
from ttsearch.study.plan import plan_runs
from ttsearch.study.recipe import Recipe, StrategyEntry

__all__ = ["DEFAULT_MAX_N", "ModelCatalog", "ServedModel"]

DEFAULT_MAX_N = 1024  # the largest budget N a request may ask for: one request must not hold the engines
_CACHE_SIZE = 256  # strategies built for requests, kept for the next request with the same options


@dataclass(frozen=True, slots=True)
class ServedModel:
    """One entry of `GET /v1/models`."""

    name: str
    strategy: str | None  # registry name; None: the policy's plain sampling
    n: int | None  # the search budget N (None: plain sampling, whose `n` is the choices)
    options: Mapping[str, Any]  # the strategy's options as the recipe sets them


class ModelCatalog:
    """The recipe's presets and the rules that turn any model name into a strategy."""

    def __init__(self, recipe: Recipe, *, policy_name: str, has_verifier: bool, max_n: int = DEFAULT_MAX_N) -> None:
        self._recipe = replace(recipe, seeds=recipe.seeds[:1])  # one strategy per entry and N
        self.policy_name = policy_name
        self.has_verifier = has_verifier
        self.max_n = max_n
        self._entries = {entry.label: entry for entry in recipe.strategies}
        self._built: OrderedDict[str, Strategy] = OrderedDict()
        self.presets = [
            ServedModel(f"{entry.label}-{n}", entry.strategy, n, {**entry.options, **entry.per_n.get(n, {})})
            for entry in recipe.strategies
            for n in entry.n
        ]
        if policy_name in {preset.name for preset in self.presets}:
            raise RecipeError(f"the policy's name {policy_name!r} is also a preset's name; rename the strategy entry")
        for preset in self.presets:  # a bad recipe fails at start-up, not on its first request
            if preset.strategy is not None and (has_verifier or not STRATEGIES[preset.strategy].needs_verifier):
                self.strategy(preset.name)

    @property
    def models(self) -> list[ServedModel]:
        """The policy (plain sampling), then every preset in recipe order."""
        return [ServedModel(self.policy_name, None, None, {}), *self.presets]

    def is_plain_sampling(self, model: str) -> bool:
        return model == self.policy_name

    def strategy(self, model: str, overrides: Mapping[str, Any] | None = None) -> Strategy:
        """The strategy `model` names, with `overrides` (a request's `search` options).

        :raises ApiError: 404 for a name that is no model here; 400 for a bad option.
        """
        label, n = self._split(model)
        options = dict(overrides or {})
        if "n" in options:
            n = options.pop("n")
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ApiError(f"search.n must be a positive integer, got {n!r}", param="search.n")
        if n > self.max_n:
            raise ApiError(f"the search budget N={n} is above this server's limit of {self.max_n}", param="search.n")
        entry = self._entries.get(label)
        if entry is not None:
            name, base = entry.strategy, {**entry.options, **entry.per_n.get(n, {})}
        else:
            name, base = label, {}
        if STRATEGIES[name].needs_verifier and not self.has_verifier:
            raise ApiError(f"model {model!r} ({name}) needs a PRM and this server has none", param="model")
        return self._build(model, name, n, {**base, **options})

    def sampling(self, n: int, options: Mapping[str, Any]) -> Strategy:
        """Plain sampling: `n` independent solutions (majority voting's samples, no PRM)."""
        return self._build(self.policy_name, "majority", n, options)

    def _split(self, model: str) -> tuple[str, int]:
        label, sep, budget = model.rpartition("-")
        if sep and budget.isdigit() and int(budget) >= 1 and (label in self._entries or label in STRATEGIES):
            return label, int(budget)
        raise ApiError(
            f"the model {model!r} does not exist: name a search as <strategy>-<N> (e.g. "
            f"{self.presets[0].name if self.presets else 'best_of_n-16'}; strategies: {', '.join(sorted(STRATEGIES))}) "
            f"or the policy {self.policy_name!r} for plain sampling; GET /v1/models lists the presets",
            status=404,
            param="model",
            code="model_not_found",
        )

    def _build(self, model: str, name: str, n: int, options: Mapping[str, Any]) -> Strategy:
        key = json.dumps([name, n, options], sort_keys=True, default=repr)
        cached = self._built.get(key)
        if cached is not None:
            self._built.move_to_end(key)
            return cached
        entry = StrategyEntry(label=model, strategy=name, n=(n,), options=dict(options))
        try:
            (run,) = plan_runs(replace(self._recipe, strategies=(entry,)))
        except RecipeError as error:
            # The planner's message starts by naming the recipe entry: here, that is the model.
            why = str(error).removeprefix(f"strategy entry {model!r} ({name}) at n={n}: ")
            raise ApiError(f"model {model!r} with n={n} and options {dict(options)}: {why}", param="search") from None
        self._built[key] = run.strategy
        if len(self._built) > _CACHE_SIZE:
            self._built.popitem(last=False)
        return run.strategy
