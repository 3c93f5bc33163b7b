"""Throughput at equal search semantics: ttsearch vs a lockstep (search-and-learn) loop, and
every method's wall time against the policy engine's decode limit.

Runs beam search, DVTS and weighted best-of-N (each at every N of `--ns`) twice on the
SAME engines: with ttsearch (`Searcher.solve_all`: every problem in flight, PRM scoring
that reads the prefix cache) and with the lockstep baseline (`benchmarks/baselines/
lockstep.py`: per iteration one generate call for the batch's live beams, then the PRM
recomputes every beam's whole prefix, then selection; beam search one problem at a time).
Both run the same strategy objects at the same seed, so they sample the same steps; the
prefix caches are reset before every run (and each run gets fresh verifier wrappers), so
no run reads what another computed.

`--methods all` adds issue 18's methods, which only ttsearch runs (there is no lockstep
baseline for them; their rows say so): particle filtering (`pf`), particle Gibbs
(`pgibbs`), entropic particle filtering (`epf`), REBASE (`rebase`) and MCTS (`mcts`), with
the same sampling temperature and reduction as the others and their classes' defaults
otherwise (MCTS: 4 children per expansion; particle Gibbs: 2 iterations).

The decode limit (on by default; `--no-decode-limit` skips it). Every policy request the
ttsearch run completed is recorded (`benchmarks/decode_limit.py`: a `Policy` that forwards
to the real one and keeps each `SampleRequest`: prompt token ids, n, temperature, top_p,
max_tokens, stop, seed). After the method's runs the prefix caches are reset as before
each run, and exactly those requests are sent again to the same policy engine, with no PRM
and none waiting for another: all submitted at once, in the order the search sent them,
at most `--max-policy-requests` open (the cap the search's request gate had; vLLM then
runs as many sequences as its `max_num_seqs` and KV cache allow, as during the search).
That time is the limit; each run's wall time over it is the ratio (issue 18's target:
<= 1.2x). What the limit includes and what it does not:

- The same work: the same prompts, n, max_tokens and stop strings at the same seeds, so
  the engine samples the same tokens (the replay's token count is printed beside the
  search's; on CPU a different batch composition can in principle change a float and so
  a sample, hence "same" is checked, not assumed). It goes through the same `VLLMPolicy`
  code, so the per-request work in this process (request setup, detokenisation, the
  stop-string checks) is in both. Requests the search saw fail or cancelled are not
  replayed (their count is in the JSON); nor are the PRM's.
- Not included: the PRM. Its compute, and on a small CPU machine its engine's competition
  for the same cores: during the search the PRM engine runs beside the policy, during the
  replay it is idle. Nor the strategies' and search loop's own time, nor any waiting of a
  step for its parent. The ratio charges all of that to the search, which is the point.
- Every prompt is available at once, so the engine runs full batches from the first
  moment to the last; a search must wait for step k before it can send step k+1, so its
  batches are smaller at the start and in the tail of the run. So the limit is a lower
  bound on the wall time of any search that must wait for its own steps, with the one
  caveat of prefill below. It is reachable on this CPU machine, where the engine's
  throughput saturates at a modest batch, once enough problems are in flight; on a GPU,
  where a batch costs about what one request does, the dependent steps cost more.
- Prefix-cache hits differ. In the search a step's prompt is its parent's prompt plus
  the parent's new tokens, which the engine has just computed, so most of a prompt is a
  hit (whole KV blocks only). In the replay a deep prompt arrives together with the
  request that produces its prefix, so it is often prefilled from scratch (or from an
  ancestor's shared blocks): the replay can compute MORE prompt tokens than the search
  did, which makes the limit slower than an ideal schedule and the ratio flatter for the
  search. Both counts are printed ("policy prompt tokens computed", from vLLM's
  `num_cached_tokens` per request, for one of a request's n sequences) so the size of this
  is visible; when the replay computes far more, read the ratio as optimistic. The
  KV cache is the same size in both; a replay that fills it is preempted (recomputed),
  which the counts do not show.

`--order ttsearch ttsearch-kv` (any of `ttsearch`, `ttsearch-kv`, `lockstep`, in the
order to run them) adds a ttsearch run with `Searcher(kv_admission=True)`: problems are
admitted while their estimated KV working set fits the smaller engine's cache, instead of
`--max-concurrent` at once. `--count-preemptions` starts both engines with vLLM's stats on
and reports the sequences each engine preempted per run (its KV cache was full: it dropped
their cache and recomputes it), which is what admission by KV cache is for.

The checks, enforced: every other run of a method must produce the same candidates as its
ttsearch run (the same strategy at the same seed samples the same steps), problem by
problem, on the problems both ran; a run that differs is listed at the end and the
benchmark exits with status 1. Rates are compared over the same problems only: when
`--lockstep-time-limit` cut the lockstep run to its first k problems, ttsearch is run again
on those k (`ttsearch_on_compared` in the JSON) and the speed-up is over them.

Prints, per method and N: wall time, problems/s, generated tok/s, PRM tokens sent /
read from the cache / computed per problem (and computed / generated), PRM requests,
candidates, preemptions (with `--count-preemptions`), the checks and the speed-ups; then
the decode limit and the ratios; at the end one table of every run (method, N, run, wall
s, limit s, ratio, within target, tokens generated, PRM tokens computed); plus machine and
versions. Writes everything as JSON (`--out`; `failed_checks`; per row: `ttsearch` /
`ttsearch-kv` / `lockstep` with `seconds`, `generated_tokens`, `prm_computed_tokens`,
`policy_requests`, `policy_prefill`, `policy_preemptions`, `prm_preemptions`,
`over_decode_limit`; `checked_lockstep` / `checked_ttsearch-kv`, `speedup`,
`kv_admission_speedup`; `decode_limit` with `seconds`, `requests`, `sequences`,
`prompt_tokens`, `generated_tokens`, `same_generated_tokens`, `policy_prefill`).

    .venv/bin/python benchmarks/throughput.py                      # the toy world, 100 problems, N=16
    .venv/bin/python benchmarks/throughput.py --methods all        # ... and the five new methods
    .venv/bin/python benchmarks/throughput.py --models DIR --dataset math500.jsonl   # see benchmarks/gpu/run.sh

Models: `toy` (the shipped toy policy + PRM, Math-Shepherd format, T=1.0, reduction
"min", width 4: the demo's settings) or a directory with `policy/` and `prm/` (e.g. the
calibrated random-weight Llamas of benchmarks/gpu/build_models.py, RLHFlow format).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("TTSEARCH_SHARED", REPO.parent / "shared"))


# The methods the lockstep baseline reproduces (search-and-learn's three), then the ones
# only ttsearch runs (issue 18; no lockstep baseline exists for them).
LOCKSTEP_METHODS = ("beam", "dvts", "bon")
NEW_METHODS = ("pf", "pgibbs", "epf", "rebase", "mcts")
METHODS = LOCKSTEP_METHODS + NEW_METHODS
DEFAULT_METHODS = list(LOCKSTEP_METHODS)
# The ways to run a method: ttsearch, ttsearch admitting problems by KV cache
# (`Searcher(kv_admission=True)`), and the lockstep baseline.
WAYS = ("ttsearch", "ttsearch-kv", "lockstep")


def _strategies(name: str, n: int, width: int, temperature: float, reduction: str) -> Any:
    """The strategy object of a method: `temperature` (sampling) and `reduction` for all,
    `width` where the method has one (beam search, DVTS), the class defaults otherwise."""
    from ttsearch.strategies import (
        DVTS,
        MCTS,
        REBASE,
        BeamSearch,
        BestOfN,
        EntropicParticleFiltering,
        ParticleFiltering,
        ParticleGibbs,
    )

    common: dict[str, Any] = dict(temperature=temperature, reduction=reduction)
    if name == "beam":
        return BeamSearch(n=n, width=width, **common)
    if name == "dvts":
        return DVTS(n=n, width=width, **common)
    if name == "bon":
        return BestOfN(n=n, selection="weighted", **common)
    classes = {
        "pf": ParticleFiltering,
        "pgibbs": ParticleGibbs,
        "epf": EntropicParticleFiltering,
        "rebase": REBASE,
        "mcts": MCTS,
    }
    return classes[name](n=n, **common)


async def _reset_caches(*engines: Any) -> None:
    for engine in engines:
        result = engine.reset_prefix_cache()
        if asyncio.iscoroutine(result):
            await result


def _summary(results: list[Any], seconds: float) -> dict[str, Any]:
    from ttsearch.core.scheduler import Usage

    total = Usage()
    for r in results:
        if r.error is not None:
            raise RuntimeError(f"problem {r.index} failed: {r.error}")
        total.add(r.usage)
    p = len(results)
    return {
        "seconds": seconds,
        "problems": p,
        "problems_per_s": p / seconds,
        "generated_tok_per_s": total.generated_tokens / seconds,
        "generated_tokens": total.generated_tokens,
        "prm_computed_tokens": total.verifier_computed_tokens,
        "generated_per_problem": total.generated_tokens / p,
        "prm_sent_per_problem": total.verifier_tokens / p,
        "prm_cached_per_problem": total.verifier_cached_tokens / p,
        "prm_computed_per_problem": total.verifier_computed_tokens / p,
        "prm_computed_over_generated": total.verifier_computed_tokens / max(1, total.generated_tokens),
        "prm_requests_per_problem": total.verifier_requests / p,
        "candidates": sum(len(r.candidates) for r in results),
        "usage": {k: v for k, v in asdict(total).items() if k != "seconds"},
    }


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.decode_limit import count_prefill

    # The problems first: a dataset that fails to load must not leave both engines running.
    problems, limits, fmt, settings = _workload(args)
    policy, prm_engine_verifier = await _start_engines(args, settings)
    try:
        print(f"engines started; {len(problems)} problems; {settings}", flush=True)
        preemptions = _count_preemptions(policy, prm_engine_verifier) if args.count_preemptions else {}
        with count_prefill(policy) as prefill:
            run = _Bench(args, policy, prm_engine_verifier, problems, limits, fmt, settings, prefill, preemptions)
            await _bench_rows(run)
    finally:
        try:
            await prm_engine_verifier.close()
        finally:  # the policy's engine too, whatever closing the PRM's did
            await policy.close()
    _print_table(run.rows)
    return run.report()


def _count_preemptions(policy: Any, prm_engine_verifier: Any) -> dict[str, Any]:
    """A `PreemptionCounter` on each engine ("policy", "prm"); the engines were started
    with stats on (`--count-preemptions`)."""
    from benchmarks.decode_limit import PreemptionCounter

    counters = {
        "policy": PreemptionCounter.attach(policy.engine),
        "prm": PreemptionCounter.attach(prm_engine_verifier.engine),
    }
    missing = [name for name, counter in counters.items() if counter is None]
    if missing:
        raise RuntimeError(f"--count-preemptions: the {' and '.join(missing)} engine has no stat loggers")
    return counters


@dataclass
class _Bench:
    """What every run of one benchmark shares, and what it has found so far."""

    args: argparse.Namespace
    policy: Any  # the VLLMPolicy
    prm: Any  # the PRM engine's VLLMVerifier (each run builds its own verifier on its engine)
    problems: list[Any]
    limits: Any
    fmt: Any  # the PRM's input format
    settings: dict[str, Any]
    prefill: Any  # a PrefillCounter on the policy's engine, or None
    preemptions: dict[str, Any]  # "policy" / "prm": a PreemptionCounter (empty: not counted)
    rows: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # checks that failed, one line each

    @property
    def engines(self) -> tuple[Any, Any]:
        return self.policy.engine, self.prm.engine

    def verifier(self, *, reuse_prefix: bool) -> Any:
        from ttsearch.backends.vllm.verifier import VLLMVerifier

        return VLLMVerifier(
            self.prm.engine,
            self.prm.tokenizer,
            format=self.fmt,
            max_in_flight=self.args.prm_in_flight,
            reuse_prefix=reuse_prefix,
        )

    def report(self) -> dict[str, Any]:
        return {"settings": self.settings, "machine": _machine(), "rows": self.rows, "failed_checks": self.failures}

    def save(self) -> None:
        """Rewrite the JSON with everything so far (a run cut short keeps what it measured)."""
        _write(self.args.out, self.report())


async def _bench_rows(bench: _Bench) -> None:
    # Every method at the smallest N first: a run cut short by a time limit still has
    # every method.
    for n in bench.args.ns:
        for method in bench.args.methods:
            await _bench_row(bench, method, n)


async def _bench_row(bench: _Bench, method: str, n: int) -> None:
    """Run one method at one N every way asked for, then its decode limit and its checks."""
    args = bench.args
    strategy = _strategies(method, n, args.width, args.temperature, args.reduction)
    has_baseline = method in LOCKSTEP_METHODS
    ways = [w for w in args.order if has_baseline or w != "lockstep"] or ["ttsearch"]
    row: dict[str, Any] = {
        "method": method,
        "n": n,
        "strategy": repr(strategy),
        "baseline": "lockstep" if has_baseline else "none (ttsearch only: no lockstep baseline for this method)",
    }
    bench.rows.append(row)
    results: dict[str, list[Any]] = {}
    recorded: dict[str, Any] = {}
    for way in ways:
        results[way], recorded[way], row[way] = await _run(
            bench, way, strategy, bench.problems, f"{method} N={n} {way}"
        )
        _print_run(row, way, len(bench.problems))
        bench.save()
    if args.decode_limit:
        await _decode_limit(args, row, ways, recorded, bench.policy, bench.engines, bench.prefill, len(bench.problems))
        bench.save()
    await _check_row(bench, row, strategy, results)
    bench.save()


async def _run(
    bench: _Bench, way: str, strategy: Any, problems: list[Any], label: str
) -> tuple[list[Any], Any, dict[str, Any]]:
    """One run of `strategy` over `problems`, `way` ("ttsearch", "ttsearch-kv" or
    "lockstep"), after a prefix-cache reset and with fresh verifier wrappers, so it reads
    nothing another run computed. Returns its results, its `RecordingPolicy` and its summary."""
    from benchmarks.baselines.lockstep import run_lockstep
    from benchmarks.decode_limit import RecordingPolicy

    await _reset_caches(*bench.engines)
    prefill_before = bench.prefill.snapshot() if bench.prefill is not None else None
    preempted_before = {name: counter.preemptions for name, counter in bench.preemptions.items()}
    started = time.perf_counter()
    recorder = RecordingPolicy(bench.policy)
    policy, prm = _Counted(recorder), _Counted(bench.verifier(reuse_prefix=way != "lockstep"))
    async with _Heartbeat(label, len(problems), bench.args.heartbeat, policy, prm) as progress:
        if way == "lockstep":
            limit = bench.args.lockstep_time_limit
            results = await run_lockstep(
                problems,
                strategy,
                policy,
                prm,
                limits=bench.limits,
                seed=bench.args.seed,
                deadline=started + limit if limit else None,
                on_batch=progress.set,
            )
        else:
            results = await _search(bench, strategy, problems, policy, prm, way == "ttsearch-kv", progress)
    summary = _summary(results, time.perf_counter() - started)
    summary["policy_requests"] = len(recorder.requests)
    if prefill_before is not None:
        summary["policy_prefill"] = bench.prefill.since(prefill_before)
    for name, counter in bench.preemptions.items():
        summary[f"{name}_preemptions"] = counter.preemptions - preempted_before[name]
    return results, recorder, summary


async def _search(
    bench: _Bench, strategy: Any, problems: list[Any], policy: Any, prm: Any, kv_admission: bool, progress: _Heartbeat
) -> list[Any]:
    from ttsearch.core.searcher import Searcher

    searcher = Searcher(
        policy,
        prm,
        limits=bench.limits,
        seed=bench.args.seed,
        keep_trees=False,  # as the experiment runner builds it
        close_backends=False,
        max_concurrent_problems=bench.args.max_concurrent,
        max_policy_requests=bench.args.max_policy_requests,
        kv_admission=kv_admission,
    )
    results = []
    async for result in searcher.solve_all(problems, strategy):
        results.append(result)
        progress.done = len(results)
    return results


def _print_run(row: dict[str, Any], way: str, problems: int) -> None:
    s = row[way]
    cut = f" (time limit: {s['problems']} of {problems} problems)" if s["problems"] < problems else ""
    tag = "" if row["baseline"] == "lockstep" else " (ttsearch only: no lockstep baseline)"
    preempted = ""
    if "policy_preemptions" in s:
        preempted = f"; preemptions: policy {s['policy_preemptions']}, PRM {s['prm_preemptions']}"
    print(
        f"  {row['method']:6s} N={row['n']:<4d} {way:11s} {s['seconds']:7.1f} s  {s['problems_per_s']:6.2f} problems/s  "
        f"{s['generated_tok_per_s']:7.0f} gen tok/s  per problem: {s['generated_per_problem']:7.0f} generated, "
        f"PRM {s['prm_computed_per_problem']:7.0f} computed + {s['prm_cached_per_problem']:6.0f} cached "
        f"({s['prm_computed_over_generated']:.2f}x generated), {s['prm_requests_per_problem']:5.1f} requests; "
        f"{s['candidates']} candidates{preempted}{cut}{tag}",
        flush=True,
    )


async def _check_row(bench: _Bench, row: dict[str, Any], strategy: Any, results: dict[str, list[Any]]) -> None:
    """Check the row's other runs against its ttsearch run, which ran the same strategy
    at the same seed and so sampled the same steps: the same candidates on every problem
    both ran (a failure is recorded in `bench.failures`), and the rate over the same
    problems (`speedup`, lockstep; `kv_admission_speedup`, ttsearch-kv)."""
    if "ttsearch" not in results:
        return
    label = f"{row['method']} N={row['n']}"
    for way in ("lockstep", "ttsearch-kv"):
        if way not in results:
            continue
        mismatches = candidate_mismatches(results["ttsearch"], results[way])
        compared = len(results[way])
        row[f"checked_{way}"] = {
            "compared_problems": compared,
            "same_candidates": not mismatches,
            "mismatches": mismatches,
        }
        if mismatches:
            bench.failures.append(
                f"{label} ttsearch vs {way}: {len(mismatches)} of {compared} problems differ ({'; '.join(mismatches[:3])})"
            )
        ours, ours_seconds = results["ttsearch"], row["ttsearch"]["seconds"]
        if compared < len(ours):  # lockstep cut by --lockstep-time-limit: ttsearch on the same problems
            ours, _, row["ttsearch_on_compared"] = await _run(
                bench, "ttsearch", strategy, bench.problems[:compared], f"{label} ttsearch on lockstep's {compared}"
            )
            ours_seconds = row["ttsearch_on_compared"]["seconds"]
        if way == "lockstep":  # ttsearch over the baseline
            key, rate = "speedup", speedup_on_same_problems(ours, ours_seconds, results[way], row[way]["seconds"])
        else:  # admission by KV cache over ttsearch without it
            key, rate = (
                "kv_admission_speedup",
                speedup_on_same_problems(results[way], row[way]["seconds"], ours, ours_seconds),
            )
        row[key] = rate
        print(
            f"  {row['method']:6s} N={row['n']:<4d} ttsearch vs {way}: {key} {row[key]:.2f}x (problems/s, over "
            f"{compared} problems); candidates {'DIFFER' if mismatches else 'equal'} on "
            f"{compared - len(mismatches)} of {compared} problems",
            flush=True,
        )


def candidate_mismatches(ours: Sequence[Any], theirs: Sequence[Any]) -> list[str]:
    """How two runs of one strategy at one seed disagree, one line per problem: every
    problem `theirs` ran must be in `ours` with the same candidate solutions (the same
    texts, in any order). Empty when they agree."""
    by_index = {result.index: result for result in ours}
    mismatches = []
    for result in sorted(theirs, key=lambda r: r.index):
        mine = by_index.get(result.index)
        if mine is None:
            mismatches.append(f"problem {result.index}: missing from the first run")
        elif len(mine.candidates) != len(result.candidates):
            mismatches.append(f"problem {result.index}: {len(mine.candidates)} candidates vs {len(result.candidates)}")
        elif sorted(c.text for c in mine.candidates) != sorted(c.text for c in result.candidates):
            mismatches.append(f"problem {result.index}: different candidate solutions")
    return mismatches


def speedup_on_same_problems(
    ours: Sequence[Any], ours_seconds: float, theirs: Sequence[Any], theirs_seconds: float
) -> float:
    """Our problems/s over theirs. Raises ValueError unless both runs covered the same
    problems: a rate over other problems (say, lockstep's first k of a time-limited run
    against all of ours) compares different work."""
    mine, other = {r.index for r in ours}, {r.index for r in theirs}
    if mine != other:
        raise ValueError(
            f"rates over different problems: {len(mine)} problems vs {len(other)} ({len(mine ^ other)} not in both)"
        )
    return (len(ours) / ours_seconds) / (len(theirs) / theirs_seconds)


def exit_on_failed_checks(failures: Sequence[str], *, exit_with: Callable[[int], Any] = sys.exit) -> None:
    """Print the failed checks to stderr and exit with status 1; return if none failed."""
    if not failures:
        return
    print(f"throughput benchmark: {len(failures)} check(s) FAILED:", file=sys.stderr)
    for failure in failures:
        print(f"  {failure}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    exit_with(1)


DECODE_LIMIT_TARGET = 1.2  # issue 18: every method within 1.2x of the policy's decode limit


async def _decode_limit(
    args: argparse.Namespace,
    row: dict[str, Any],
    ways: list[str],
    recorded: dict[str, Any],
    policy: Any,
    engines: tuple[Any, ...],
    prefill: Any,
    problems: int,
) -> None:
    """Replay the policy requests of the row's ttsearch run (else its lockstep run) against
    the policy engine alone, all at once, after the same cache reset; store the time as
    `row["decode_limit"]` and each run's wall time over it as `row[way]["over_decode_limit"]`."""
    from benchmarks.decode_limit import replay

    source = "ttsearch" if "ttsearch" in recorded else ways[0]
    requests = recorded[source].requests
    label = f"{row['method']} N={row['n']} decode limit"
    await _reset_caches(*engines)
    before = prefill.snapshot() if prefill is not None else None
    counted = _Counted(policy)
    async with _Heartbeat(label, len(requests), args.heartbeat, counted, None, unit="requests") as progress:
        result = await replay(counted, requests, max_in_flight=args.max_policy_requests, on_done=progress.set)
    limit: dict[str, Any] = {"replayed_run": source, **asdict(result)}
    limit["generated_tok_per_s"] = result.generated_tokens / result.seconds
    limit["search_generated_tokens"] = recorded[source].generated_tokens
    limit["same_generated_tokens"] = result.generated_tokens == recorded[source].generated_tokens
    limit["search_failed_requests"] = recorded[source].failed  # not replayed
    if before is not None:
        limit["policy_prefill"] = prefill.since(before)
    row["decode_limit"] = limit
    ratios = []
    for way in ways:
        s = row[way]
        # A run cut short by --lockstep-time-limit did less work than the replay: no ratio.
        s["over_decode_limit"] = s["seconds"] / result.seconds if s["problems"] == problems else None
        if s["over_decode_limit"] is not None:
            ratios.append(f"{way} {s['over_decode_limit']:.2f}x")
    prompt = ""
    if before is not None:
        computed = row[source]["policy_prefill"]["prompt_computed_tokens"]
        prompt = (
            f"; policy prompt tokens computed: {source} {computed}, replay "
            f"{limit['policy_prefill']['prompt_computed_tokens']} (of {result.prompt_tokens} sent)"
        )
    tokens = "same" if limit["same_generated_tokens"] else f"search {limit['search_generated_tokens']}"
    print(
        f"  {row['method']:6s} N={row['n']:<4d} decode limit {result.seconds:7.1f} s  ({result.requests} requests of "
        f"the {source} run, {result.sequences} sequences, {result.generated_tokens} tokens generated ({tokens}), "
        f"{limit['generated_tok_per_s']:.0f} tok/s, <= {result.max_in_flight} open); wall / limit: "
        f"{', '.join(ratios) or 'n/a'} (target <= {DECODE_LIMIT_TARGET}x){prompt}",
        flush=True,
    )


def _print_table(rows: list[dict[str, Any]]) -> None:
    """Every run's wall time against its method's decode limit, one line each."""
    if not any("decode_limit" in row for row in rows):
        return
    print(
        "\nwall time vs the policy engine's decode limit (the same policy requests replayed at once, no PRM):",
        flush=True,
    )
    header = (
        f"  {'method':6s} {'N':>4s} {'run':11s} {'wall s':>8s} {'limit s':>8s} {'ratio':>6s} {'ok':3s} "
        f"{'generated':>10s} {'PRM computed':>12s}  baseline"
    )
    print(header)
    for row in rows:
        limit = row.get("decode_limit")
        if limit is None:
            continue
        for way in WAYS:
            s = row.get(way)
            if s is None:
                continue
            ratio = s.get("over_decode_limit")
            ok = "" if ratio is None else ("yes" if ratio <= DECODE_LIMIT_TARGET else "NO")
            print(
                f"  {row['method']:6s} {row['n']:4d} {way:11s} {s['seconds']:8.1f} {limit['seconds']:8.1f} "
                f"{'n/a' if ratio is None else f'{ratio:.2f}x':>6s} {ok:3s} {s['generated_tokens']:10d} "
                f"{s['prm_computed_tokens']:12d}  {'lockstep' if row['baseline'] == 'lockstep' else 'none'}"
            )
    sys.stdout.flush()


class _Counted:
    """A policy or verifier that counts what passes through it (for the heartbeat); every
    other attribute is the wrapped backend's."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self.requests = self.open = self.tokens = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    @property
    def kv_cache_tokens(self) -> int | None:
        # Spelled out (not left to __getattr__): `KVCacheSized` checks may look it up statically.
        return getattr(self._backend, "kv_cache_tokens", None)

    async def sample(self, request: Any) -> Any:
        self.requests += 1
        self.open += 1
        try:
            samples = await self._backend.sample(request)
        finally:
            self.open -= 1
        self.tokens += sum(len(s.token_ids) for s in samples)
        return samples

    async def score(self, question: str, steps: Any, *, first: int = 0) -> Any:
        self.requests += 1
        self.open += 1
        try:
            result = await self._backend.score(question, steps, first=first)
        finally:
            self.open -= 1
        self.tokens += result.prompt_tokens
        return result


class _Heartbeat:
    """Prints "label: k/n problems, policy and PRM calls and tokens so far, after t s" every
    `every` seconds while a run goes on, so a long or stuck run shows where it is (a run
    cut by a time limit prints no result row). `unit`: what k counts; `prm` None: no PRM."""

    def __init__(
        self, label: str, total: int, every: float, policy: _Counted, prm: _Counted | None, *, unit: str = "problems"
    ) -> None:
        self.label, self.total, self.every, self.done, self.unit = label, total, every, 0, unit
        self.policy, self.prm = policy, prm
        self._task: asyncio.Task[None] | None = None
        self._started = time.perf_counter()

    def set(self, done: int) -> None:
        self.done = done

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            t = time.perf_counter() - self._started
            prm = (
                ""
                if self.prm is None
                else f"; PRM {self.prm.requests} calls ({self.prm.open} open), {self.prm.tokens} tokens sent"
            )
            print(
                f"    ... {self.label}: {self.done}/{self.total} {self.unit} after {t:.0f} s; policy "
                f"{self.policy.requests} calls ({self.policy.open} open), {self.policy.tokens} tokens "
                f"({self.policy.tokens / t:.0f}/s){prm}",
                flush=True,
            )

    async def __aenter__(self) -> _Heartbeat:
        if self.every > 0:
            self._task = asyncio.create_task(self._beat())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()


def _workload(args: argparse.Namespace) -> tuple[list[Any], Any, Any, dict[str, Any]]:
    """The problems, search limits and PRM format of the run, and its settings so far;
    loads the dataset (no engine is started here)."""
    from ttsearch.core.search import SearchLimits

    settings = {
        "models": str(args.models),
        "n": args.ns,
        "width": args.width,
        "temperature": args.temperature,
        "reduction": args.reduction,
        "problems": args.problems,
        "seed": args.seed,
        "methods": args.methods,
        "order": args.order,
        "max_concurrent": args.max_concurrent,
        "max_policy_requests": args.max_policy_requests,
        "decode_limit": args.decode_limit,
        "count_preemptions": args.count_preemptions,
    }
    if str(args.models) == "toy":
        from ttsearch.toy.backends import TOY_MAX_SOLUTION_TOKENS, TOY_PRM_FORMAT
        from ttsearch.toy.task import HELD_OUT_SEED, make_problems

        settings["dataset"] = "toy held-out problems"
        limits = SearchLimits(max_solution_tokens=TOY_MAX_SOLUTION_TOKENS)
        return make_problems(args.problems, seed=HELD_OUT_SEED), limits, TOY_PRM_FORMAT, settings

    from ttsearch import RLHFLOW, load_math500

    problems = load_math500(args.dataset, limit=args.problems)
    settings.update(dataset=str(args.dataset), max_tokens=args.max_tokens, prm_format="rlhflow")
    return problems, SearchLimits(max_solution_tokens=args.max_tokens), RLHFLOW, settings


async def _start_engines(args: argparse.Namespace, settings: dict[str, Any]) -> tuple[Any, Any]:
    """Start the policy and the PRM engine side by side (adds their sizes to `settings`)."""
    from ttsearch.backends.startup import start_together
    from ttsearch.backends.vllm.policy import VLLMPolicy
    from ttsearch.backends.vllm.verifier import VLLMVerifier

    # Stats on only where preemptions are counted: vLLM computes them per engine step.
    stats = {"disable_log_stats": False} if args.count_preemptions else {}
    if str(args.models) == "toy":
        from ttsearch.toy.backends import start_toy_engines

        settings.update(policy_kv_mib=args.policy_kv_mib, prm_kv_mib=args.prm_kv_mib, max_num_seqs=args.max_num_seqs)
        return await start_toy_engines(
            seed=args.seed,
            policy_kv_bytes=args.policy_kv_mib << 20,
            prm_kv_bytes=args.prm_kv_mib << 20,
            max_num_seqs=args.max_num_seqs,
            engine_options=stats,
        )

    from ttsearch import RLHFLOW

    models = Path(args.models)
    engine: dict[str, Any] = dict(
        dtype="bfloat16", max_model_len=args.max_model_len, enforce_eager=args.eager, seed=args.seed
    )
    engine["engine_options"] = {**stats, **({"block_size": args.block_size} if args.block_size else {})}
    import torch

    if torch.cuda.is_available():  # fractions of GPU memory; exact KV sizes when given
        memory = [dict(gpu_memory_utilization=args.policy_memory), dict(gpu_memory_utilization=args.prm_memory)]
        if args.gpu_kv_gib:
            # Exact sizes make the two engines' KV caches independent of their start order
            # (vLLM sizes a fraction by profiling free memory, which the other engine moves).
            for m, gib in zip(memory, args.gpu_kv_gib):
                m["kv_cache_memory_bytes"] = int(gib * (1 << 30))
            settings.update(policy_kv_gib=args.gpu_kv_gib[0], prm_kv_gib=args.gpu_kv_gib[1])
    else:  # on CPU exact KV-cache sizes (a fraction would be of host RAM)
        memory = [
            dict(kv_cache_memory_bytes=args.policy_kv_mib << 20),
            dict(kv_cache_memory_bytes=args.prm_kv_mib << 20),
        ]
    prm_engine = dict(engine)
    if args.prm_dummy_weights:  # vLLM draws random weights: same cost, nothing to load
        prm_engine["engine_options"] = {**prm_engine["engine_options"], "load_format": "dummy"}
        settings["prm_weights"] = "dummy (vLLM load_format)"
    policy, verifier = await start_together(
        partial(VLLMPolicy.from_pretrained, models / "policy", max_num_seqs=args.max_num_seqs, **memory[0], **engine),
        partial(
            VLLMVerifier.from_pretrained,
            models / "prm",
            format=RLHFLOW,
            max_num_seqs=args.max_num_seqs,
            **memory[1],
            **prm_engine,
        ),
    )
    return policy, verifier


def _write(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


def _machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    try:
        import torch
        import vllm

        info["vllm"] = vllm.__version__
        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except Exception as e:
        info["versions_error"] = repr(e)
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="toy", help="'toy' or a directory with policy/ and prm/")
    parser.add_argument("--dataset", default=str(SHARED / "data" / "math500.jsonl"))
    parser.add_argument("--problems", type=int, default=100)
    parser.add_argument(
        "--methods",
        nargs="+",
        default=DEFAULT_METHODS,
        choices=[*METHODS, "all"],
        help=f"default: {' '.join(DEFAULT_METHODS)} (with the lockstep baseline); 'all': also "
        f"{' '.join(NEW_METHODS)} (particle filtering, particle Gibbs, entropic PF, REBASE, MCTS: ttsearch only)",
    )
    parser.add_argument("--ns", type=int, nargs="+", default=[16])
    parser.add_argument("--width", type=int, default=4)
    parser.add_argument("--temperature", type=float, default=None, help="default: 1.0 (toy), 0.8 (others)")
    parser.add_argument("--reduction", default=None, help="default: min (toy), last (others)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--order",
        nargs="+",
        default=["ttsearch", "lockstep"],
        choices=list(WAYS),
        help="the runs of each method, in this order (default: ttsearch lockstep); 'ttsearch-kv': ttsearch "
        "with Searcher(kv_admission=True), checked against the ttsearch run",
    )
    parser.add_argument(
        "--policy-kv-mib", type=int, default=96, help="CPU: policy KV cache (toy default: start_toy_engines')"
    )
    parser.add_argument("--prm-kv-mib", type=int, default=64, help="CPU: PRM KV cache")
    parser.add_argument("--max-concurrent", type=int, default=128, help="ttsearch: problems in flight")
    parser.add_argument("--prm-in-flight", type=int, default=256, help="PRM requests open at once")
    parser.add_argument(
        "--max-policy-requests",
        type=int,
        default=512,
        metavar="K",
        help="policy requests open at once: ttsearch's request gate, and the decode-limit replay's (default: "
        "the Searcher's)",
    )
    parser.add_argument(
        "--decode-limit",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="after each method, replay its policy requests against the policy engine alone and print "
        "wall time / that time (default: on)",
    )
    parser.add_argument("--max-tokens", type=int, default=2048, help="non-toy: tokens per solution")
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--max-num-seqs", type=int, default=None)
    parser.add_argument("--policy-memory", type=float, default=0.3)
    parser.add_argument("--prm-memory", type=float, default=0.55)
    parser.add_argument(
        "--gpu-kv-gib",
        type=float,
        nargs=2,
        default=None,
        metavar=("POLICY", "PRM"),
        help="GPU: exact KV-cache sizes (GiB) for the two engines, besides the memory fractions",
    )
    parser.add_argument(
        "--prm-dummy-weights",
        action="store_true",
        help="start the PRM with vLLM's load_format='dummy' (random weights; build_models.py "
        "--prm-weights dummy writes only its config)",
    )
    parser.add_argument(
        "--lockstep-time-limit",
        type=float,
        default=None,
        metavar="S",
        help="no lockstep batch starts after S seconds (beam search runs one problem per "
        "batch): ttsearch is then run again on the problems lockstep ran, and the rates compared over them",
    )
    parser.add_argument(
        "--heartbeat",
        type=float,
        default=30.0,
        metavar="S",
        help="print progress every S seconds during a run (0: never)",
    )
    parser.add_argument(
        "--count-preemptions",
        action="store_true",
        help="start both engines with vLLM's stats on and report each run's preempted sequences per engine",
    )
    parser.add_argument("--block-size", type=int, default=None)
    parser.add_argument("--eager", action="store_true", help="enforce_eager (faster start, slower run)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "throughput.json")
    args = parser.parse_args()
    if "all" in args.methods:
        args.methods = list(METHODS)
    args.methods = list(dict.fromkeys(args.methods))  # once each, in the order given
    toy = args.models == "toy"
    args.temperature = args.temperature if args.temperature is not None else (1.0 if toy else 0.8)
    args.reduction = args.reduction or ("min" if toy else "last")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    report = asyncio.run(bench(args))
    print(json.dumps(report["machine"]))
    _write(args.out, report)
    print(f"wrote {args.out}")
    sys.stdout.flush()
    # os._exit: engines' background threads must not keep the process alive.
    exit_on_failed_checks(report["failed_checks"], exit_with=os._exit)
    os._exit(0)


if __name__ == "__main__":
    main()
