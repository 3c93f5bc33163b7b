"""Benchmark runs: search a dataset, append each finished problem to a JSONL file, resume.

Each problem is written (and flushed) as soon as it finishes, so a run that is killed
loses at most the problems in flight; running again skips every problem already in the
file. `load_results` / `evaluate_results` turn the file into accuracy tables.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ttsearch.core.results import SearchResult
from ttsearch.core.scheduler import Usage
from ttsearch.core.searcher import Searcher
from ttsearch.core.strategy import Strategy
from ttsearch.errors import RecordsError
from ttsearch.evaluation.datasets import Problem
from ttsearch.evaluation.grading import is_equivalent
from ttsearch.evaluation.metrics import AccuracyReport, ProblemSamples, accuracy_at_k
from ttsearch.records import RECORD_VERSION, read_records, record_kind, record_n


@dataclass(frozen=True, slots=True)
class RunSummary:
    path: Path
    solved: int  # problems whose selected answer matched the gold answer (this call + earlier)
    done: int  # problems in the file
    failed: int  # problems that could not run (error recorded in the file)
    skipped: int  # problems found already done in the file
    usage: Usage  # compute of the problems searched by this call

    @property
    def accuracy(self) -> float:
        return self.solved / self.done if self.done else 0.0


def result_record(
    result: SearchResult, problem: Problem, strategy: Strategy, correct: bool, *, date_string: str | None = None
) -> dict[str, Any]:
    """One results-file line (the fields: docs/records.md). `date_string`: the date pinned
    into the policy's chat template."""
    return {
        "record_version": RECORD_VERSION,
        "unique_id": problem.unique_id,
        "problem": problem.problem,
        "gold": problem.answer,
        "subject": problem.subject,
        "level": problem.level,
        "strategy": strategy.name,
        "config": strategy.options(),
        "kind": strategy.budget_kind,
        "n": strategy.n,
        "generation_budget": strategy.generation_budget,  # N, or N(k+1) for lookahead (the paper's count)
        "selection": result.selection,
        "answer": result.answer,
        "correct": correct,
        "error": result.error,
        "candidates": [
            {
                "text": c.text,
                "answer": c.answer,
                "step_scores": list(c.step_scores),
                "score": c.score,
                "finish": c.finish,
                "num_tokens": c.num_tokens,
            }
            for c in result.candidates
        ],
        "usage": asdict(result.usage),
        "date_string": date_string,
    }


def _rewrite_without_torn_line(path: Path, records: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    os.replace(tmp, path)


async def run_benchmark(
    searcher: Searcher,
    problems: Sequence[Problem],
    strategy: Strategy,
    out_path: str | Path,
    *,
    progress: bool = True,
) -> RunSummary:
    """Search every problem not yet in `out_path`, appending one JSON line per problem."""
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Plain file I/O on the loop (noqa below): one short line per finished problem,
    # written and flushed at once so a kill loses nothing; a thread hop would cost more.
    records = read_records(path)
    if path.exists():  # noqa: ASYNC240
        _rewrite_without_torn_line(path, records)
    done_ids = {r["unique_id"] for r in records}
    ids = [p.unique_id for p in problems]
    if len(set(ids)) != len(ids):
        raise ValueError("problems have duplicate unique_id values; results could not be resumed")
    todo = [p for p in problems if p.unique_id not in done_ids]
    usage = Usage()
    solved = sum(bool(r.get("correct")) for r in records)
    failed = sum(r.get("error") is not None for r in records)
    date_string = getattr(searcher.policy, "date_string", None)  # VLLMPolicy pins one
    bar = tqdm(total=len(problems), initial=len(problems) - len(todo), disable=not progress, desc=strategy.name)
    with path.open("a", encoding="utf-8") as out:  # noqa: ASYNC230
        async for result in searcher.solve_all(todo, strategy):
            problem = todo[result.index or 0]
            correct = result.answer is not None and await asyncio.to_thread(
                is_equivalent, problem.answer, result.answer
            )
            out.write(json.dumps(result_record(result, problem, strategy, correct, date_string=date_string)) + "\n")
            out.flush()
            usage.add(result.usage)
            solved += correct
            failed += result.error is not None
            bar.update(1)
            bar.set_postfix(acc=f"{solved / max(bar.n, 1):.3f}")
    bar.close()
    return RunSummary(
        path=path, solved=solved, done=len(records) + len(todo), failed=failed, skipped=len(records), usage=usage
    )


def records_to_samples(records: Sequence[dict[str, Any]]) -> list[ProblemSamples]:
    """Turn result records (failed ones left out) into inputs for `accuracy_at_k`.

    Each problem carries its budget: the N the strategy ran with (record "n", else its
    config's "n") and its kind (record "kind", else from the strategy name), so that only
    sampling strategies are subsampled.
    """
    return [
        ProblemSamples(
            gold=r["gold"],
            answers=tuple(c["answer"] for c in r["candidates"]),
            rewards=tuple(c["score"] for c in r["candidates"]),
            unique_id=r["unique_id"],
            subject=r.get("subject"),
            level=r.get("level"),
            kind=record_kind(r),
            n=record_n(r),
        )
        for r in records
        if r.get("error") is None and r["candidates"]
    ]


def evaluate_results(paths: Sequence[str | Path], *, ks: Sequence[int] | None = None) -> AccuracyReport:
    """Accuracy at each budget (maj / naive / weighted) over results files of one strategy.

    Files are runs: seeds of one N, or (for stepwise strategies) runs at several N, each
    reported at its own N. Sampling strategies are read at every k <= N (mean over disjoint
    groups of k samples). Files of different strategies are refused.
    """
    runs = []
    strategies: dict[str, str] = {}
    for p in paths:
        records = read_records(Path(p))
        samples = records_to_samples(records)
        if not samples:
            raise RecordsError(f"{p}: no successful results to evaluate")
        for r in records:
            strategies.setdefault(str(r.get("label") or r.get("strategy")), str(p))
        runs.append(samples)
    if len(strategies) > 1:
        named = ", ".join(f"{s} ({f})" for s, f in strategies.items())
        raise RecordsError(
            f"results of different strategies: {named}; evaluate each strategy separately "
            "(or use `ttsearch report` on an experiment directory)"
        )
    return accuracy_at_k(runs, ks=ks)
