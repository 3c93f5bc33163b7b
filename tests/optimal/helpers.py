"""Hand-made experiment directories and outcome tables with known answers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ttsearch.study.optimal.outcomes import Cell, Option, Outcomes, Predictor

# A candidate: (answer, score, correct, num_tokens)
Cand = tuple[str | None, float, bool, int]


def write_run(
    directory: Path,
    *,
    label: str,
    strategy: str,
    kind: str,
    n: int,
    seed: int,
    problems: dict[str, Sequence[Cand]],
    budgets: Sequence[int] | None = None,
    config: dict | None = None,
    scored: bool = True,
    with_correct: bool = True,
    gold: str = "7",
    errors: Sequence[str] = (),
    usage: dict | None = None,
) -> str:
    """One run's JSONL in DIR/runs, the docs/records.md way; returns its run_id.

    `usage` replaces fields of every record's usage (default: generated tokens = the
    candidates' tokens, verifier_tokens = 10 per scored candidate, no cache counts)."""
    run_id = f"{label}-n{n}-s{seed}"
    budgets = list(budgets or [n])
    config = {"n": n, "temperature": 0.8, "reduction": "last", "selection": "weighted", **(config or {})}
    (directory / "runs").mkdir(parents=True, exist_ok=True)
    lines = []
    for index, (uid, cands) in enumerate(problems.items()):
        candidates = []
        for answer, score, correct, tokens in cands:
            c = {
                "text": f"\\boxed{{{answer}}}",
                "answer": answer,
                "step_scores": [score] if scored else [],
                "score": score if scored else 0.0,
                "finish": "eos",
                "num_tokens": tokens,
            }
            if with_correct:
                c["correct"] = correct
            candidates.append(c)
        record_usage = {
            "generated_tokens": sum(c[3] for c in cands),
            "verifier_tokens": 10 * len(cands) if scored else 0,
            **(usage or {}),
        }
        lines.append(
            {
                "unique_id": uid,
                "problem": f"problem {uid}",
                "gold": gold,
                "subject": None,
                "level": None,
                "strategy": strategy,
                "config": config,
                "selection": config["selection"],
                "answer": None,
                "correct": False,
                "error": "boom" if uid in errors else None,
                "candidates": [] if uid in errors else candidates,
                "usage": record_usage,
                "run_id": run_id,
                "label": label,
                "n": n,
                "seed": seed,
                "kind": kind,
                "budgets": budgets,
                "index": index,
            }
        )
    manifest = directory / "manifest.json"
    if not manifest.exists():  # the report's loader needs one; runs not declared in it are read from records
        manifest.write_text(json.dumps({"recipe": {}, "recipe_hash": "test", "runs": []}), encoding="utf-8")
    path = directory / "runs" / f"{run_id}.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return run_id


def write_best_of_n(directory: Path, seed: int, problems: dict[str, Sequence[Cand]], **kwargs: Any) -> str:
    """`write_run` for a scored best-of-N sampling run of 4 samples reported at budgets 1, 2
    and 4 (label and strategy "best_of_n"); `kwargs` override any of these."""
    fixed: dict[str, Any] = {
        "label": "best_of_n",
        "strategy": "best_of_n",
        "kind": "sampling",
        "n": 4,
        "budgets": [1, 2, 4],
    }
    return write_run(directory, **(fixed | {"seed": seed, "problems": problems} | kwargs))


def write_beam(directory: Path, seed: int, problems: dict[str, Sequence[Cand]], **kwargs: Any) -> str:
    """`write_run` for a beam-search (stepwise) run at N=4, width 2 (label and strategy
    "beam"); `kwargs` override any of these."""
    fixed: dict[str, Any] = {"label": "beam", "strategy": "beam", "kind": "stepwise", "n": 4, "config": {"width": 2}}
    return write_run(directory, **(fixed | {"seed": seed, "problems": problems} | kwargs))


def write_majority(directory: Path, seed: int, problems: dict[str, Sequence[Cand]], **kwargs: Any) -> str:
    """`write_run` for an unscored majority-vote sampling run of 2 samples (label and
    strategy "majority"); `kwargs` override any of these."""
    fixed: dict[str, Any] = {"label": "majority", "strategy": "majority", "kind": "sampling", "n": 2, "scored": False}
    return write_run(directory, **(fixed | {"seed": seed, "problems": problems} | kwargs))


def outcomes_from_table(
    accuracy: dict[str, Sequence[float]],
    *,
    n: int = 4,
    tokens: dict[str, float] | None = None,
    mean_score: Sequence[float] | None = None,
) -> Outcomes:
    """Outcomes at one budget from per-problem accuracies per option name ('label/selection')."""
    options = []
    cells = {}
    size = None
    for name, acc in accuracy.items():
        label, selection = name.split("/")
        kind = "sampling" if label in ("majority", "best_of_n") else "stepwise"
        options.append(Option(label, label, {"n": n, "temperature": 0.8, "width": 2}, selection, kind))
        size = len(acc)
        cost = (tokens or {}).get(name, 100.0)
        cells[(name, n)] = Cell(np.asarray(acc, dtype=float), np.full(len(acc), cost), np.zeros(len(acc)))
    assert size is not None
    score = np.linspace(1, 0, size) if mean_score is None else np.asarray(mean_score, dtype=float)
    return Outcomes(
        problems=tuple(f"p{i}" for i in range(size)),
        budgets=(n,),
        options=tuple(options),
        cells=cells,
        pass_rate=np.asarray(score),
        mean_score=score,
        predictor=Predictor("best_of_n", "last", 0.8),
        num_seeds=1,
        dropped=(),
    )
