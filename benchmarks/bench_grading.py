"""Benchmark of answer grading: grader-case agreement and majority-vote canonicalisation speed.

Run: .venv/bin/python benchmarks/bench_grading.py [--problems 500 --answers 256]

1. Agreement of `Grader.is_equivalent` with the 333 public grader cases
   (`../shared/data/grader_cases.jsonl`): overall, `core`, non-core.
2. Synthetic majority voting: for each MATH-500 problem, `--answers` answers made from the gold
   answer (verbatim, equivalent rewrites, wrong numbers, text, None), canonicalised and grouped
   with `group_answers` from a cold cache; then each group's representative is graded against
   gold. Prints throughput and the worst single-call latencies. Prints numbers, asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import time
from pathlib import Path

from ttsearch.evaluation.canonical import canonical_form, group_answers
from ttsearch.evaluation.grading import Grader, quick_verdict

SHARED = Path(os.environ.get("TTSEARCH_SHARED", Path(__file__).resolve().parents[2] / "shared"))
_FRAC_RE = re.compile(r"^\\frac\{(\d+)\}\{(\d+)\}$")


def grader_agreement(grader: Grader) -> None:
    cases = [json.loads(line) for line in (SHARED / "data/grader_cases.jsonl").read_text().splitlines()]
    agree = {"all": 0, "core": 0, "noncore": 0}
    total = {"all": len(cases), "core": 0, "noncore": 0}
    disagreeing: list[str] = []
    start = time.perf_counter()
    for case in cases:
        part = "core" if case["core"] else "noncore"
        total[part] += 1
        ok = grader.is_equivalent(case["gold"], case["pred"]) == case["equal"]
        agree["all"] += ok
        agree[part] += ok
        if not ok:
            disagreeing.append(f"{case['id']}{'(CORE)' if case['core'] else ''}[{','.join(case['policy'])}]")
    elapsed = time.perf_counter() - start
    print("== grader cases ==")
    for part in ("all", "core", "noncore"):
        print(f"  {part:8s} {agree[part]:4d}/{total[part]:<4d} agree ({100 * agree[part] / total[part]:.1f}%)")
    print(f"  disagreeing: {' '.join(disagreeing) or '-'}")
    print(f"  {elapsed:.2f}s for {len(cases)} comparisons")


def _variants(gold: str, rng: random.Random) -> list[str]:
    """Equivalent rewrites of a gold answer, as models write them."""
    out = [gold, f"${gold}$", f"\\boxed{{{gold}}}", gold.replace(" ", ""), f" {gold} "]
    out.append(gold.replace("\\frac", "\\dfrac"))
    out.append(gold.replace("\\dfrac", "\\frac").replace("\\left", "").replace("\\right", ""))
    m = _FRAC_RE.match(gold)
    if m:
        num, den = int(m.group(1)), int(m.group(2))
        out += [f"{num}/{den}", f"\\frac{{{2 * num}}}{{{2 * den}}}", f"\\tfrac{{{num}}}{{{den}}}"]
        if den and all(p in (2, 5) for p in _prime_factors(den)):
            out.append(repr(num / den))
    if gold.lstrip("-").isdigit():
        n = int(gold)
        out += [f"{n}.0", f"x = {n}", f"{n}\\text{{ units}}", f"{n:,}", f"+{n}" if n >= 0 else str(n)]
    if "\\pi" in gold:
        out.append(gold.replace("\\pi", "\\pi "))
    return out


def _prime_factors(n: int) -> list[int]:
    out, p = [], 2
    while p * p <= n:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    return out + ([n] if n > 1 else [])


def synth_answers(gold: str, n: int, rng: random.Random) -> list[str | None]:
    """Answers of a sampled policy: mostly gold or a rewrite, a tail of wrong ones."""
    variants = _variants(gold, rng)
    wrong_pool = [str(rng.randint(-50, 500)) for _ in range(12)]
    wrong_pool += [f"\\frac{{{rng.randint(1, 30)}}}{{{rng.randint(2, 31)}}}" for _ in range(4)]
    wrong_pool += [f"{rng.randint(1, 9)}\\sqrt{{{rng.randint(2, 30)}}}", f"{gold}+1", f"-{gold}"]
    text_pool = ["\\text{no solution}", "I don't know", "\\text{undefined}", "\\emptyset"]
    answers: list[str | None] = []
    for _ in range(n):
        r = rng.random()
        if r < 0.35:
            answers.append(gold)
        elif r < 0.60:
            answers.append(rng.choice(variants))
        elif r < 0.90:
            answers.append(rng.choice(wrong_pool))
        elif r < 0.95:
            answers.append(rng.choice(text_pool))
        else:
            answers.append(None)
    return answers


def voting_benchmark(grader: Grader, problems: int, answers_per_problem: int, seed: int) -> None:
    rng = random.Random(seed)
    golds = [json.loads(line)["answer"] for line in (SHARED / "data/math500.jsonl").read_text().splitlines()]
    golds = [golds[i % len(golds)] for i in range(problems)]
    batches = [synth_answers(gold, answers_per_problem, rng) for gold in golds]
    n_answers = sum(len(b) for b in batches)
    distinct = {a for b in batches for a in b if a is not None}

    canonical_form.cache_clear()  # type: ignore[attr-defined]
    start = time.perf_counter()
    groups = [group_answers(batch) for batch in batches]
    elapsed = time.perf_counter() - start
    print("== majority-vote canonicalisation ==")
    print(
        f"  {problems} problems x {answers_per_problem} answers = {n_answers} answers, {len(distinct)} distinct strings"
    )
    print(f"  group_answers total {elapsed:.3f}s = {n_answers / elapsed:,.0f} answers/s (cold cache)")
    print(f"  groups per problem: mean {sum(map(len, groups)) / problems:.1f}, max {max(map(len, groups))}")

    canonical_form.cache_clear()  # type: ignore[attr-defined]
    worst, worst_s = 0.0, ""
    for answer in distinct:
        t = time.perf_counter()
        canonical_form(answer)
        dt = time.perf_counter() - t
        if dt > worst:
            worst, worst_s = dt, answer
    print(f"  canonical_form worst single (uncached) call: {1e3 * worst:.2f} ms on {worst_s!r}")

    # Grading after voting: one is_equivalent per (gold, group representative).
    calls = worker_calls = 0
    worst, worst_pair = 0.0, ("", "")
    start = time.perf_counter()
    for gold, batch, by_key in zip(golds, batches, groups):
        for indices in by_key.values():
            pred = batch[indices[0]]
            assert pred is not None
            worker_calls += quick_verdict(gold, pred) is None
            t = time.perf_counter()
            grader.is_equivalent(gold, pred)
            dt = time.perf_counter() - t
            calls += 1
            if dt > worst:
                worst, worst_pair = dt, (gold, pred)
    elapsed = time.perf_counter() - start
    print("== grading group representatives against gold ==")
    print(f"  {calls} is_equivalent calls ({worker_calls} needed a worker) in {elapsed:.2f}s")
    print(f"  is_equivalent worst single call: {1e3 * worst:.1f} ms on {worst_pair!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=500)
    parser.add_argument("--answers", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    with Grader() as grader:
        t = time.perf_counter()
        grader.is_equivalent("1", "x")  # starts the worker
        print(f"worker start: {time.perf_counter() - t:.2f}s")
        grader_agreement(grader)
        voting_benchmark(grader, args.problems, args.answers, args.seed)


if __name__ == "__main__":
    main()
