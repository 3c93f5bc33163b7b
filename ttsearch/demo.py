"""`ttsearch demo`: the search strategies on the shipped toy world, through real vLLM engines.

Held-out toy arithmetic problems are searched with majority voting, weighted best-of-N,
beam search and DVTS at each budget N, by the shipped tiny policy and PRM
(`ttsearch.toy`) on vLLM (CPU is fine). Majority voting and best-of-N are read from the
same N=max samples (budget k: the mean over the disjoint groups of k candidates, a paired
comparison); beam search and DVTS run once per N. Prints an accuracy table and saves a
plot and a JSON report.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from ttsearch.engine.results import SearchResult, pick_answer
from ttsearch.engine.searcher import Searcher
from ttsearch.evaluation.datasets import Problem
from ttsearch.evaluation.grading import is_equivalent
from ttsearch.evaluation.metrics import AccuracyTable, MethodCurve
from ttsearch.evaluation.aggregation import Reduction
from ttsearch.strategies import DVTS, BeamSearch, BestOfN, Strategy

METHOD_LABELS = {
    "majority": "majority voting",
    "weighted_bon": "weighted best-of-N",
    "beam": "beam search",
    "dvts": "DVTS",
}


@dataclass(frozen=True)
class ToyExperiment:
    """Accuracy of each method at each budget N on the same problems."""

    ns: tuple[int, ...]
    accuracy: dict[str, tuple[float, ...]]  # method -> accuracy per N
    num_problems: int
    seconds: float
    generated_tokens: int

    def table(self) -> AccuracyTable:
        curves = tuple(
            MethodCurve(method=METHOD_LABELS[m], mean=acc, std=(0.0,) * len(acc), per_seed=(acc,))
            for m, acc in self.accuracy.items()
        )
        return AccuracyTable(ks=self.ns, curves=curves, num_problems=self.num_problems, num_seeds=1)


# Sampling temperature of every strategy in the toy experiment. Plain sampling (1.0): at
# 0.8 the toy policy's wrong answers on hard problems concentrate on one value, so majority
# voting gains nothing from 1 to 16 samples (measured: 42.7% -> 44%), unlike a real LLM's.
TOY_TEMPERATURE = 1.0


def _width(n: int, width: int = 4) -> int:
    return min(width, n)


async def run_toy_experiment(
    searcher: Searcher,
    problems: Sequence[Problem],
    ns: Sequence[int] = (1, 2, 4, 8, 16),
    *,
    reduction: Reduction = "min",
    temperature: float = TOY_TEMPERATURE,
    progress: bool = True,
) -> ToyExperiment:
    """Search `problems` with every method at every N (all runs in flight at once).

    `reduction` turns a solution's step scores into its reward, for every strategy. "min"
    by default: the toy PRM judges each step given the solution's own previous result
    (`ttsearch.toy.task.check_steps_locally`), so a solution is as good as its worst step.
    """
    ns = tuple(sorted(set(ns)))
    if not ns or ns[0] < 1:
        raise ValueError(f"budgets must be positive, got {ns}")
    runs: list[tuple[str, int, Strategy]] = [
        ("sampling", ns[-1], BestOfN(n=ns[-1], selection="weighted", reduction=reduction, temperature=temperature))
    ]
    for n in ns:
        runs.append(("beam", n, BeamSearch(n=n, width=_width(n), reduction=reduction, temperature=temperature)))
        runs.append(("dvts", n, DVTS(n=n, width=_width(n), reduction=reduction, temperature=temperature)))
    bar = tqdm(total=len(runs) * len(problems), disable=not progress, desc="toy search", unit="search")
    started = time.perf_counter()

    async def collect(strategy: Strategy) -> list[SearchResult]:
        results: list[SearchResult] = [None] * len(problems)  # type: ignore[list-item]
        async for result in searcher.solve_all(problems, strategy):
            if result.error is not None:
                raise RuntimeError(f"toy problem {result.index} failed: {result.error}")
            results[result.index or 0] = result
            bar.update(1)
        return results

    outputs = await asyncio.gather(*(collect(strategy) for _, _, strategy in runs))
    bar.close()
    seconds = time.perf_counter() - started

    table: dict[str, list[float]] = {m: [] for m in METHOD_LABELS}
    sampled = outputs[0]
    for n in ns:
        # Budget n from the N=max independent samples: the mean over their N/n disjoint
        # groups of n, as if only n had been drawn (at n=1, the mean sample accuracy:
        # one sample alone would add +-5 points of noise over 100 problems).
        table["majority"].append(_grouped_accuracy(problems, sampled, n, "majority"))
        table["weighted_bon"].append(_grouped_accuracy(problems, sampled, n, "weighted"))
    for (kind, _, _), results in zip(runs[1:], outputs[1:]):
        table[kind].append(sum(_is_right(p, r.answer) for p, r in zip(problems, results)) / len(problems))
    return ToyExperiment(
        ns=ns,
        accuracy={m: tuple(v) for m, v in table.items()},
        num_problems=len(problems),
        seconds=seconds,
        generated_tokens=sum(r.usage.generated_tokens for results in outputs for r in results),
    )


def _grouped_accuracy(problems: Sequence[Problem], results: Sequence[SearchResult], k: int, method: str) -> float:
    """Accuracy of `method` on k candidates, averaged over each result's disjoint groups of k."""
    total = 0.0
    for problem, result in zip(problems, results):
        groups = [result.candidates[i : i + k] for i in range(0, len(result.candidates) - k + 1, k)]
        answers = [pick_answer(method, group) for group in groups]  # type: ignore[arg-type]
        total += sum(_is_right(problem, a) for a in answers) / max(1, len(groups))
    return total / len(problems)


def _is_right(problem: Problem, answer: str | None) -> bool:
    return answer is not None and is_equivalent(problem.answer, answer)


async def run_demo(*, num_problems: int = 100, ns: Sequence[int] = (1, 2, 4, 8, 16), out_dir: Path, seed: int = 0) -> ToyExperiment:
    """The README's main job: start the toy engines, run the experiment, report."""
    from ttsearch.evaluation.report import format_table, plot_accuracy
    from ttsearch.toy.engines import start_toy_searcher
    from ttsearch.toy.task import HELD_OUT_SEED, make_problems

    # The demo prints a table; vLLM's per-engine INFO lines would bury it.
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    problems = make_problems(num_problems, seed=HELD_OUT_SEED)
    print(f"toy world: {num_problems} held-out problems (levels 1-5), budgets N = {', '.join(map(str, ns))}")
    t0 = time.perf_counter()
    searcher = await start_toy_searcher(seed=seed)
    print(f"vLLM engines (policy + PRM) started in {time.perf_counter() - t0:.0f} s")
    async with searcher:
        result = await run_toy_experiment(searcher, problems, ns)
    table = result.table()
    print(format_table(table, title="toy world, held-out problems, by budget N"))
    print(
        f"searched in {result.seconds:.0f} s, {result.generated_tokens} tokens generated "
        f"({result.generated_tokens / result.seconds:.0f} tok/s)"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    plot = plot_accuracy(table, out_dir / "toy_accuracy.png", title="toy world: accuracy vs N")
    report = {
        "ns": list(result.ns),
        "accuracy": {m: list(v) for m, v in result.accuracy.items()},
        "num_problems": result.num_problems,
        "seconds": result.seconds,
        "generated_tokens": result.generated_tokens,
        "seed": seed,
    }
    (out_dir / "toy_accuracy.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"plot: {plot}\nreport: {out_dir / 'toy_accuracy.json'}")
    return result
