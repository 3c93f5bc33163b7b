"""Compute-optimal analysis (arXiv 2408.03314) of an experiment: difficulty bins, a
cross-validated choice of strategy per bin and budget, fitting and reading the policy
table, the online replay and the adaptive budget simulation. The strategies that run a
table or an adaptive budget live in `ttsearch.strategies`."""

from ttsearch.study.optimal.adaptive import AdaptivePoint, simulate_adaptive
from ttsearch.study.optimal.analysis import ComputeOptimalAnalysis, analyse, analyse_experiment, format_analysis
from ttsearch.study.optimal.bins import DifficultyBins, fit_bins, level_of
from ttsearch.study.optimal.crossval import BinChoice, CrossValidation, CurvePoint, cross_validate
from ttsearch.study.optimal.outcomes import Option, Outcomes, build_outcomes
from ttsearch.study.optimal.plot import plot_compute_optimal
from ttsearch.study.optimal.policy_table import fit_policy, load_policy, save_policy
from ttsearch.study.optimal.probe import replay_online
from ttsearch.study.optimal.probe_bins import Membership, held_out_oracle_binner, probe_binner
from ttsearch.study.optimal.records import load_runs

__all__ = [
    "AdaptivePoint",
    "BinChoice",
    "ComputeOptimalAnalysis",
    "CrossValidation",
    "CurvePoint",
    "DifficultyBins",
    "Membership",
    "Option",
    "Outcomes",
    "analyse",
    "analyse_experiment",
    "build_outcomes",
    "cross_validate",
    "fit_bins",
    "fit_policy",
    "format_analysis",
    "held_out_oracle_binner",
    "level_of",
    "load_policy",
    "load_runs",
    "plot_compute_optimal",
    "probe_binner",
    "replay_online",
    "save_policy",
    "simulate_adaptive",
]
