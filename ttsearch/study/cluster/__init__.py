"""Studies on a Ray cluster (`ttsearch experiment RECIPE --ray [ADDRESS]`, docs/ray.md).

    summary = await run_experiment_on_ray(recipe, "runs/blog", ray=RaySpec(workers=8, resources={"num_gpus": 1}))

The same experiment as `run_experiment` (same records, manifest and resume rules; the
directory is written by this process alone), its searches spread over Ray actors that
each start the recipe's engines once. Ray is an optional extra (`pip install
ttsearch[ray]`): this package imports it only when a study runs on it (driver.py,
connect.py); nothing outside this package imports it.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import replace
from pathlib import Path

from ttsearch.errors import RecipeError
from ttsearch.study.preflight import Prepared, prepare
from ttsearch.study.recipe import RaySpec, Recipe
from ttsearch.study.runner import ExperimentSummary, execute_experiment

__all__ = ["check_ray_plan", "ray_spec", "require_ray", "run_experiment_on_ray"]

logger = logging.getLogger(__name__)

# Strategies whose problems share state across one process's batch (adaptive best-of-N
# lends unused samples between the problems of a run): split over workers, they would not
# be the study that one process runs.
_BATCH_POOLED = frozenset({"adaptive_best_of_n"})


def require_ray() -> None:
    """:raises RecipeError: Ray is not installed (before anything starts)."""
    if importlib.util.find_spec("ray") is None:
        raise RecipeError(
            "--ray needs Ray, which is not installed: pip install 'ttsearch[ray]' "
            "(in a checkout: pip install -e '.[ray]'), or run without --ray"
        )


def ray_spec(recipe: Recipe, address: str | None = None) -> RaySpec:
    """The recipe's `ray:` section (defaults without one), with `address` (from `--ray
    ADDRESS`) in place of its address when given."""
    spec = recipe.ray or RaySpec()
    return spec if address is None else replace(spec, address=address)


def check_ray_plan(prepared: Prepared) -> None:
    """What runs in one process but not split over workers, refused before anything starts.

    :raises RecipeError: naming the strategy entry.
    """
    pooled = sorted({run.label for run in prepared.runs if run.strategy_name in _BATCH_POOLED})
    if pooled:
        raise RecipeError(
            f"strategy entries {pooled} (adaptive_best_of_n) pool their budget across the problems of a run in one "
            "process; split over Ray workers they would be another study: run them without --ray (--shard splits "
            "the problems into separate pools)"
        )
    if prepared.recipe.execution.kv_admission:
        logger.warning("execution.kv_admission is not applied on Ray: each worker holds max_concurrent_problems")


async def run_experiment_on_ray(
    recipe: Recipe,
    out_dir: str | Path,
    *,
    ray: RaySpec | None = None,
    shard: tuple[int, int] | None = None,
    restart: bool = False,
    retry_failed: bool = False,
    progress: bool = True,
    verbose: bool = False,
    report: bool = True,
    prepared: Prepared | None = None,
) -> ExperimentSummary:
    """`run_experiment` with the searches on Ray workers (`ray`: default the recipe's
    `ray:` section). Connects to `ray.address`, or uses this process's Ray connection if
    it has one, or starts a local cluster for the run and stops it after.

    :raises RecipeError: Ray is not installed, or the plan cannot run split over workers.
    """
    require_ray()
    if prepared is None:
        prepared = prepare(recipe, shard=shard)
    check_ray_plan(prepared)
    from ttsearch.study.cluster.driver import RayExecutor  # imports ray

    return await execute_experiment(
        recipe,
        out_dir,
        RayExecutor(ray or ray_spec(recipe), verbose=verbose),
        shard=shard,
        restart=restart,
        retry_failed=retry_failed,
        progress=progress,
        verbose=verbose,
        report=report,
        prepared=prepared,
    )
