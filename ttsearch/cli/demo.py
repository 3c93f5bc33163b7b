"""`ttsearch demo`: the toy world through the experiment runner.

100 held-out toy arithmetic problems are searched by the shipped tiny policy and PRM
(`ttsearch.toy`) on vLLM (CPU is fine), all runs on the same two warm engines: majority
voting, best-of-N, beam search and DVTS at N = 1, 4, 16 (`recipes/toy-quick.yaml`, a few
minutes), or with `--full` the 17-run study with lookahead search at N = 1..16
(`recipes/toy.yaml`). The quick recipe is the full one with fewer runs (same problems,
seed and settings), so its numbers are the full study's. Prints the accuracy table and
writes the experiment directory with its report (plots, HTML page).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ttsearch.cli.experiment import TOY_QUICK_RECIPE, TOY_RECIPE, _print_results, _run, recipe_from_args

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
    summary = _run(recipe, out, args, shard=None)
    _print_results(summary, out)
