"""`ttsearch demo`: the toy world through the experiment runner.

Held-out toy arithmetic problems are searched by the shipped tiny policy and PRM
(`ttsearch.toy`) on vLLM (CPU is fine), all runs on the same two warm engines: majority
voting, best-of-N, beam search and DVTS at N = 1, 4, 16 on 50 problems
(`recipes/toy-quick.yaml`, about 3 minutes), or with `--full` the 17-run study on 100
problems with lookahead search too, at N = 1..16 (`recipes/toy.yaml`). The quick recipe is
the full one cut down (its first 50 problems, same seed and settings), so each of its
searches is the full study's search of that problem. Prints the accuracy table and
writes the experiment directory with its report (plots, HTML page).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ttsearch.cli.experiment import TOY_QUICK_RECIPE, TOY_RECIPE, print_results, recipe_from_args, run_recipe

__all__ = ["run_demo"]


def run_demo(args: argparse.Namespace) -> None:
    """The README's main job. `args`: the `demo` subcommand's flags."""
    path = TOY_RECIPE if args.full else TOY_QUICK_RECIPE
    out = args.out or Path("runs/demo-full" if args.full else "runs/demo")
    extra = [] if args.problems is None else [f"dataset.end={args.problems}"]
    recipe = recipe_from_args(path, args, extra)
    print(f"toy recipe {path.name}: {recipe.dataset.end} held-out problems, out {out}")
    if not args.full:
        print("(the full 17-run study, with lookahead and every N: `ttsearch demo --full`)")
    summary = run_recipe(recipe, out, args, shard=None)
    print_results(summary, out)
