"""`ttsearch fit-policy DIR... -o policy.json`: fit the compute-optimal policy table.

Also prints the cross-validated analysis (curves, per-bin tables) so the table is never
used without seeing how well per-bin choice held up on problems it was not fitted on.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ttsearch.study.optimal.analysis import analyse, format_analysis
from ttsearch.study.optimal.outcomes import build_outcomes
from ttsearch.study.optimal.plot import plot_compute_optimal
from ttsearch.study.optimal.policy_table import fit_policy, save_policy
from ttsearch.study.optimal.records import load_runs


def add_fit_policy_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fit = sub.add_parser(
        "fit-policy", help="fit the compute-optimal policy table (for the compute_optimal strategy) from experiments"
    )
    fit.add_argument("dirs", type=Path, nargs="+", help="experiment directories (shards of one experiment merge)")
    fit.add_argument("-o", "--out", type=Path, required=True, help="policy table JSON to write")
    fit.add_argument("--folds", type=int, default=5, help="cross-validation folds over problems (default 5)")
    fit.add_argument("--seed", type=int, default=0, help="seed of the fold assignment")
    fit.add_argument(
        "--probe",
        type=int,
        default=2,
        help="probe samples the table is fitted for (compute_optimal must run with the same probe; default 2)",
    )
    fit.add_argument("--plot", type=Path, help="save accuracy vs N (fixed strategies and compute-optimal) as PNG")


def run_fit_policy(args: argparse.Namespace) -> None:

    runs = load_runs(args.dirs)
    outcomes = build_outcomes(runs)
    analysis = analyse(outcomes, folds=args.folds, seed=args.seed, probe=args.probe, runs=runs)
    print(format_analysis(analysis))
    table = fit_policy(outcomes, probe=args.probe, source={"dirs": [str(d) for d in args.dirs]})
    print(f"\npolicy table: {save_policy(table, args.out)}")
    if args.plot:
        print(f"plot: {plot_compute_optimal(analysis, args.plot)}")
