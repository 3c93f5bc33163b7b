"""`ttsearch demo`: the toy recipe (`recipes/toy.yaml`) through the experiment runner.

Held-out toy arithmetic problems are searched with majority voting, best-of-N, beam
search, DVTS and lookahead search at N = 1..16 by the shipped tiny policy and PRM
(`ttsearch.toy`) on vLLM (CPU is fine), all runs on the same two warm engines. Prints the
accuracy table and writes the experiment directory with its report (plots, HTML page).
"""

from __future__ import annotations

import argparse

from ttsearch.cli.experiment import TOY_RECIPE, _print_results, _run, recipe_from_args

__all__ = ["run_demo"]


def run_demo(args: argparse.Namespace) -> None:
    """The README's main job. `args`: the `demo` subcommand's flags."""
    extra = [] if args.problems is None else [f"dataset.end={args.problems}"]
    recipe = recipe_from_args(TOY_RECIPE, args, extra)
    print(f"toy recipe {TOY_RECIPE}: {recipe.dataset.end} held-out problems, out {args.out}")
    summary = _run(recipe, args.out, args, shard=None)
    _print_results(summary, args.out)
