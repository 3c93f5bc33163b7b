"""Accuracy vs budget N: every fixed strategy beside the compute-optimal curves (the blog's plot)."""

from __future__ import annotations

from pathlib import Path

from ttsearch.study.optimal.analysis import ComputeOptimalAnalysis


def plot_compute_optimal(analysis: ComputeOptimalAnalysis, path: str | Path) -> Path:
    """Save the plot as PNG: thin lines for each strategy as configured, thick for compute-optimal.

    Accuracy against N; each compute-optimal point's tokens (generated + PRM computed, the
    probe's included) are in `format_analysis`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for curve in analysis.fixed:
        if curve.as_configured:
            ns = [p.n for p in curve.points]
            ax.plot(ns, [100 * p.accuracy for p in curve.points], marker="o", linewidth=1.2, label=curve.option)
    for curve in analysis.measured:
        ns = [p.n for p in curve.points]
        accuracy = [100 * p.accuracy for p in curve.points]
        ax.plot(ns, accuracy, marker="*", markersize=10, linewidth=2, label=f"{curve.option} (as run)")
    # The same-samples oracle is grey: an upper reference, not something a policy can reach.
    styles = {"oracle": ("-", "grey"), "oracle_held_out": ("-", "black"), "predicted": ("--", "black")}
    for heuristic, cv in analysis.cross_validations.items():
        linestyle, color = styles.get(heuristic, (":", "black"))
        ax.plot(
            [p.n for p in cv.optimal],
            [100 * p.accuracy for p in cv.optimal],
            linestyle=linestyle,
            color=color,
            linewidth=2.5,
            marker="s",
            label=f"compute-optimal, {analysis.label(heuristic)}, CV",
        )
    if analysis.online:
        ax.plot(
            [p.n for p in analysis.online],
            [100 * p.accuracy for p in analysis.online],
            linestyle=":",
            color="black",
            linewidth=2.5,
            marker="^",
            label=f"ComputeOptimal online (probe {analysis.probe}, CV)",
        )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("generation budget N")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"compute-optimal scaling, {analysis.num_problems} problems, {analysis.num_seeds} seed(s)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
