"""Benchmark runs: search a dataset, append each finished problem to a JSONL file, resume.

Each problem is written (and flushed) as soon as it finishes, so a run that is killed
loses at most the problems in flight; running again skips every problem already in the
file. `load_results` / `evaluate_results` turn the file into accuracy tables.
"""

from __future__ import annotations

import asyncio
import json
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from tqdm.auto import tqdm

from ttsearch.engine.results import SearchResult
from ttsearch.engine.scheduler import Usage
from ttsearch.engine.searcher import Searcher
from ttsearch.evaluation.datasets import Problem
from ttsearch.evaluation.grading import is_equivalent
from ttsearch.evaluation.metrics import BUDGET_KINDS, AccuracyReport, BudgetKind, ProblemSamples, accuracy_at_k
from ttsearch.strategies.base import Strategy
from ttsearch.strategies.registry import budget_kind


class ResultsFileError(ValueError):
    """A results file cannot be read (which line, what is wrong)."""


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
    """One results-file line. `date_string`: the date pinned into the policy's chat template."""
    return {
        "unique_id": problem.unique_id,
        "problem": problem.problem,
        "gold": problem.answer,
        "subject": problem.subject,
        "level": problem.level,
        "strategy": strategy.name,
        "config": _config(strategy),
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


def _config(strategy: Strategy) -> dict[str, Any]:
    try:
        return {k: v for k, v in asdict(strategy).items()}  # type: ignore[call-overload]
    except TypeError:  # a user strategy that is not a dataclass
        return {}


def read_records(path: Path) -> list[dict[str, Any]]:
    """Records of a results file. A torn last line (a run killed mid-write) is dropped."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").split("\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines) or (number == len(lines) - 1 and not lines[-1]):
                # Torn final write (a run killed mid-line): that problem simply runs again.
                warnings.warn(f"{path}:{number}: dropping a torn last line (an unfinished write)", stacklevel=2)
                break
            raise ResultsFileError(f"{path}:{number}: not valid JSON ({error.msg})") from None
        if not isinstance(record, dict) or "unique_id" not in record:
            raise ResultsFileError(f"{path}:{number}: not a ttsearch result record (no unique_id)")
        records.append(record)
    return records


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
    records = read_records(path)
    if path.exists():
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
    with path.open("a", encoding="utf-8") as out:
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


def record_kind(record: dict[str, Any]) -> BudgetKind:
    """"sampling" or "stepwise": the record's "kind", else what its strategy is."""
    kind = record.get("kind")
    if kind is not None:
        if kind not in BUDGET_KINDS:
            raise ResultsFileError(f"problem {record.get('unique_id')!r}: unknown kind {kind!r}")
        return kind  # type: ignore[no-any-return]
    strategy = record.get("strategy")
    # Records without a strategy predate it: they were sampled, as `run` did first.
    return budget_kind(strategy) if isinstance(strategy, str) else "sampling"


def record_n(record: dict[str, Any]) -> int | None:
    """The N a record's strategy ran with, or None when the record does not say."""
    n = record.get("n", (record.get("config") or {}).get("n"))
    return n if isinstance(n, int) and not isinstance(n, bool) and n >= 1 else None


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
            raise ResultsFileError(f"{p}: no successful results to evaluate")
        for r in records:
            strategies.setdefault(str(r.get("label") or r.get("strategy")), str(p))
        runs.append(samples)
    if len(strategies) > 1:
        named = ", ".join(f"{s} ({f})" for s, f in strategies.items())
        raise ResultsFileError(
            f"results of different strategies: {named}; evaluate each strategy separately "
            "(or use `ttsearch report` on an experiment directory)"
        )
    return accuracy_at_k(runs, ks=ks)
