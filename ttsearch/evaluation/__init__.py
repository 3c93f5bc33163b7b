"""Evaluation: answer extraction and grading, answer selection, metrics, datasets, reports."""

from ttsearch.errors import DatasetError
from ttsearch.evaluation.aggregation import (
    Reduction,
    Selection,
    SelectionMethod,
    best_of_n,
    majority_vote,
    reduce_all,
    reduce_scores,
    select_answer,
    select_answer_from_steps,
    weighted_best_of_n,
)
from ttsearch.evaluation.canonical import canonical_form, group_answers, normalize_answer
from ttsearch.evaluation.datasets import Problem, load_math500, load_problems_jsonl
from ttsearch.evaluation.difficulty import oracle_levels, predicted_levels, quantile_levels
from ttsearch.evaluation.extraction import extract_answer
from ttsearch.evaluation.grading import Grader, is_equivalent
from ttsearch.evaluation.metrics import (
    AccuracyReport,
    AccuracyTable,
    GradeCache,
    MethodCurve,
    ProblemSamples,
    ScoredRuns,
    accuracy_at_k,
    grade_candidates,
    pass_at_k,
    score_runs,
)
from ttsearch.evaluation.tables import format_table, plot_accuracy, report_to_dict, save_report_json

__all__ = [
    # extraction, canonical keys, grading
    "extract_answer",
    "canonical_form",
    "group_answers",
    "normalize_answer",
    "Grader",
    "is_equivalent",
    # aggregation
    "Reduction",
    "Selection",
    "SelectionMethod",
    "best_of_n",
    "majority_vote",
    "reduce_all",
    "reduce_scores",
    "select_answer",
    "select_answer_from_steps",
    "weighted_best_of_n",
    # datasets
    "DatasetError",
    "Problem",
    "load_math500",
    "load_problems_jsonl",
    # difficulty
    "oracle_levels",
    "predicted_levels",
    "quantile_levels",
    # metrics
    "AccuracyReport",
    "AccuracyTable",
    "GradeCache",
    "MethodCurve",
    "ProblemSamples",
    "ScoredRuns",
    "accuracy_at_k",
    "grade_candidates",
    "pass_at_k",
    "score_runs",
    # report
    "format_table",
    "plot_accuracy",
    "report_to_dict",
    "save_report_json",
]
