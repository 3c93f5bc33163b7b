"""The compute-optimal part of `ttsearch report`: compute_optimal.txt and compute_optimal.png."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ttsearch.study.optimal.analysis import analyse, format_analysis
from ttsearch.study.optimal.outcomes import build_outcomes
from ttsearch.study.optimal.plot import plot_compute_optimal
from ttsearch.study.optimal.records import runs_from_experiment

if TYPE_CHECKING:
    from ttsearch.study.load import Experiment


def write_compute_optimal(experiment: Experiment, out_dir: str | Path) -> tuple[Path, Path | None]:
    """Write the analysis as text (and the plot); when it cannot run, the text says why.

    :returns: (text path, plot path or None).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text_path = out / "compute_optimal.txt"
    try:
        runs = runs_from_experiment(experiment)
        analysis = analyse(build_outcomes(runs), runs=runs)
    except ValueError as error:  # e.g. fewer than 2 problems in common, nothing to cross-validate
        text_path.write_text(f"compute-optimal analysis not possible: {error}\n", encoding="utf-8")
        return text_path, None
    text_path.write_text(format_analysis(analysis) + "\n", encoding="utf-8")
    return text_path, plot_compute_optimal(analysis, out / "compute_optimal.png")
