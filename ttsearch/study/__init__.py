"""The experiment layer: recipes (YAML), runs on warm engines, resumable results.

recipe = load_recipe("recipes/toy.yaml", overrides=["dataset.end=20"])
summary = await run_experiment(recipe, "runs/toy")   # then `ttsearch report runs/toy`
"""

from ttsearch.errors import RecipeError
from ttsearch.study.plan import PlannedRun, plan_runs
from ttsearch.study.preflight import Prepared, parse_shard, prepare, select_problems
from ttsearch.study.recipe import Recipe, apply_overrides, changed_fields, load_recipe, parse_recipe
from ttsearch.study.runner import ExperimentSummary, run_experiment
from ttsearch.study.store import ExperimentStore

__all__ = [
    "ExperimentStore",
    "ExperimentSummary",
    "PlannedRun",
    "Prepared",
    "Recipe",
    "RecipeError",
    "apply_overrides",
    "changed_fields",
    "load_recipe",
    "parse_recipe",
    "parse_shard",
    "plan_runs",
    "prepare",
    "run_experiment",
    "select_problems",
]
