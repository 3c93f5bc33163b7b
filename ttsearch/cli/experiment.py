"""`ttsearch experiment RECIPE` (and `ttsearch demo`, the toy recipe) on the command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import time
from collections.abc import Sequence
from pathlib import Path

from ttsearch.errors import BackendError, SearchError
from ttsearch.evaluation.tables import text_grid
from ttsearch.study.cluster import check_ray_plan, ray_spec, require_ray, run_experiment_on_ray
from ttsearch.study.engines import engine_output_to
from ttsearch.study.plan import PlannedRun
from ttsearch.study.preflight import parse_shard, prepare
from ttsearch.study.recipe import Recipe, load_recipe
from ttsearch.study.report import Report, build_report, load_experiment
from ttsearch.study.runner import ExperimentSummary, run_experiment
from ttsearch.study.store import ExperimentStore

__all__ = [
    "TOY_QUICK_RECIPE",
    "TOY_RECIPE",
    "add_ray_flag",
    "headline_table",
    "print_results",
    "recipe_from_args",
    "run_experiment_command",
    "run_recipe",
]

TOY_RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "toy.yaml"  # `ttsearch demo --full`
TOY_QUICK_RECIPE = TOY_RECIPE.with_name("toy-quick.yaml")  # `ttsearch demo`


# `--ray` with no address: the recipe's ray.address, else a local cluster for the run.
_RAY_FROM_RECIPE = ""


def add_ray_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ray",
        nargs="?",
        const=_RAY_FROM_RECIPE,
        metavar="ADDRESS",
        help="search on Ray workers (needs the ray extra; settings in the recipe's ray: section): at ADDRESS "
        "(auto, host:6379, ray://host:10001), else the recipe's ray.address, else a local cluster for the run "
        "(docs/ray.md)",
    )


def _ray_address(args: argparse.Namespace) -> str | None:
    """`--ray ADDRESS`'s address (None: the recipe's)."""
    value = getattr(args, "ray", None)
    return value or None


def recipe_from_args(path: Path, args: argparse.Namespace, extra: Sequence[str] = ()) -> Recipe:
    overrides = [*extra, *args.overrides]
    if getattr(args, "seeds", None):
        overrides.append(f"seeds=[{', '.join(map(str, args.seeds))}]")
    return load_recipe(path, overrides)


def describe_plan(runs: Sequence[PlannedRun], problems: int) -> str:
    lines = [f"{len(runs)} runs x {problems} problems:"]
    for run in runs:
        budgets = "" if run.budgets == (run.n,) else f" (read at N = {', '.join(map(str, run.budgets))})"
        lines.append(f"  {run.run_id}: {run.strategy_name} n={run.n} seed={run.seed}{budgets}")
    return "\n".join(lines)


def run_experiment_command(args: argparse.Namespace) -> int:
    if getattr(args, "ray", None) is not None:
        require_ray()  # before the recipe's models and data are checked (seconds)
    recipe = recipe_from_args(args.recipe, args)
    shard = parse_shard(args.shard) if args.shard else None
    if args.check:
        prepared = prepare(recipe, shard=shard)
        if getattr(args, "ray", None) is not None:
            check_ray_plan(prepared)
        print(f"recipe {args.recipe} is valid (hash {recipe.hash})")
        print(describe_plan(prepared.runs, len(prepared.problems)))
        if getattr(args, "ray", None) is not None:
            print(_describe_ray(recipe, _ray_address(args)))
        return 0
    out = args.out
    if out is None:
        out = Path("runs") / (recipe.name + (f"-shard{shard[0]}of{shard[1]}" if shard else ""))
    summary = run_recipe(recipe, out, args, shard=shard)
    print_results(summary, out)
    return 0


def _describe_ray(recipe: Recipe, address: str | None) -> str:
    spec = ray_spec(recipe, address)
    where = spec.address or "a local cluster started for the run"
    workers = spec.workers or "as many as the cluster's resources hold"
    return (
        f"on Ray: {where}; workers: {workers}, each with {spec.resources or 'one CPU'}; "
        f"max_restarts {spec.max_restarts}"
    )


def run_recipe(
    recipe: Recipe, out: Path, args: argparse.Namespace, *, shard: tuple[int, int] | None
) -> ExperimentSummary:
    """Run `recipe` into `out` as every command does (`experiment`, `run`, `demo`); on Ray
    workers with `--ray` (`args.ray`)."""

    started = time.perf_counter()
    on_ray = getattr(args, "ray", None) is not None
    if on_ray:
        require_ray()
    prepared = prepare(recipe, shard=shard)  # every input checked before anything is written
    if on_ray:
        check_ray_plan(prepared)
    ExperimentStore(out, recipe, prepared.runs, shard=shard).check(restart=args.restart)
    # vLLM's engine processes print hundreds of lines on a CPU; unless --verbose they go
    # to a log file in the experiment directory (named in any error).
    log = out / "logs" / "engines.log"
    hide = contextlib.nullcontext() if args.verbose else engine_output_to(log)
    try:
        with hide:
            options = dict(
                shard=shard,
                restart=args.restart,
                retry_failed=args.retry_failed,
                progress=not args.quiet,
                verbose=args.verbose,
                report=not args.no_report,
                prepared=prepared,
            )
            if on_ray:
                spec = ray_spec(recipe, _ray_address(args))
                summary = asyncio.run(run_experiment_on_ray(recipe, out, ray=spec, **options))
            else:
                summary = asyncio.run(run_experiment(recipe, out, **options))
    except (BackendError, SearchError) as error:
        if args.verbose:
            raise
        raise type(error)(f"{error} (engine output: {log})") from error
    print(
        f"{summary.runs} runs x {summary.problems} problems in {out}: {summary.searched} searched "
        f"({_searched_detail(summary)}), {summary.resumed} already done; engines started in "
        f"{summary.engine_seconds:.0f} s, searched in {summary.seconds:.0f} s "
        f"({summary.usage.generated_tokens} tokens generated, {summary.usage.verifier_tokens} PRM tokens); "
        f"{time.perf_counter() - started:.0f} s in all"
    )
    if summary.failed_kept:
        print(
            f"{summary.failed_kept} problem(s) kept the error their earlier search recorded; "
            "--retry-failed searches them again"
        )
    return summary


def _searched_detail(summary: ExperimentSummary) -> str:
    detail = [f"{summary.failed} failed"]
    if summary.retried:
        detail.append(f"{summary.retried} of them failed before and retried")
    if summary.regraded:
        detail.append(f"{summary.regraded} answers of earlier searches graded")
    return ", ".join(detail)


def print_results(summary: ExperimentSummary, out: Path) -> None:
    if summary.report_html is None:
        print("no finished problems: no report")
        return

    report = build_report(load_experiment(out))
    print()
    print(headline_table(report))
    print(f"\nreport: {summary.report_html} (tables, plots, difficulty bins, compute: `ttsearch report {out}`)")


def headline_table(report: Report, *, digits: int = 1) -> str:
    """Accuracy (%) of every strategy entry with its own selection, by budget N (mean over
    seeds; +-std when there are several)."""

    ks = sorted({k for s in report.strategies for k in s.ks})
    rows = []
    for s in report.strategies:
        table = s.overall
        curve = table.curve(s.selection)
        cells = []
        for k in ks:
            if k not in table.ks or math.isnan(curve.mean[table.ks.index(k)]):
                cells.append("-")
                continue
            i = table.ks.index(k)
            cell = f"{100 * curve.mean[i]:.{digits}f}"
            if table.num_seeds > 1:
                cell += f"±{100 * curve.std[i]:.{digits}f}"
            cells.append(cell)
        rows.append([f"{s.label} ({s.selection})", *cells])
    seeds = max((len(s.seeds) for s in report.strategies), default=1)
    title = f"accuracy (%) over {report.problems} problems, {seeds} seed(s), by budget N"
    note = (
        "majority / best-of-N at N < their largest N: the mean over disjoint groups of N of the same samples; "
        "beam / DVTS / lookahead: one search at each N"
    )
    return f"{title}\n{text_grid(['strategy (selection)', *(f'N={k}' for k in ks)], rows)}\n{note}"
