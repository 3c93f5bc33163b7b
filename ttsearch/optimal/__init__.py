"""Compute-optimal test-time scaling (arXiv 2408.03314): difficulty bins, a cross-validated
choice of strategy per bin and budget, a fitted policy table, the `ComputeOptimal`
strategy that applies it online, and an adaptive budget reallocation across problems."""

from ttsearch.optimal.adaptive import AdaptivePoint, simulate_adaptive
from ttsearch.optimal.budget_pool import AdaptiveBestOfN, BudgetPool
from ttsearch.optimal.analysis import ComputeOptimalAnalysis, analyse, analyse_experiment, format_analysis
from ttsearch.optimal.bins import DifficultyBins, fit_bins, level_of
from ttsearch.optimal.crossval import BinChoice, CrossValidation, CurvePoint, cross_validate
from ttsearch.optimal.outcomes import Option, Outcomes, build_outcomes
from ttsearch.optimal.plot import plot_compute_optimal
from ttsearch.optimal.policy_table import PolicyChoice, PolicyTable, fit_policy, load_policy, save_policy
from ttsearch.optimal.probe import replay_online
from ttsearch.optimal.records import load_runs
from ttsearch.optimal.strategy import ComputeOptimal

__all__ = [
    "AdaptiveBestOfN",
    "AdaptivePoint",
    "BinChoice",
    "BudgetPool",
    "ComputeOptimal",
    "ComputeOptimalAnalysis",
    "CrossValidation",
    "CurvePoint",
    "DifficultyBins",
    "Option",
    "Outcomes",
    "PolicyChoice",
    "PolicyTable",
    "analyse",
    "analyse_experiment",
    "build_outcomes",
    "cross_validate",
    "fit_bins",
    "fit_policy",
    "format_analysis",
    "level_of",
    "load_policy",
    "load_runs",
    "plot_compute_optimal",
    "replay_online",
    "save_policy",
    "simulate_adaptive",
]
