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

Prints, per method and N: wall time, problems/s, generated tok/s, PRM tokens sent /
read from the cache / computed per problem (and computed / generated), PRM requests,
candidates (checked equal between the two), the speed-up; then the decode limit and the
ratios; at the end one table of every run (method, N, run, wall s, limit s, ratio,
within target, tokens generated, PRM tokens computed); plus machine and versions.
Writes everything as JSON (`--out`; per row: `ttsearch` / `lockstep` with `seconds`,
`generated_tokens`, `prm_computed_tokens`, `policy_requests`, `policy_prefill`,
`over_decode_limit`; `decode_limit` with `seconds`, `requests`, `sequences`,
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
from dataclasses import asdict
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

    policy, prm_engine_verifier, problems, limits, fmt, settings = await _start(args)
    print(f"engines started; {len(problems)} problems; {settings}", flush=True)
    rows: list[dict[str, Any]] = []
    try:
        with count_prefill(policy) as prefill:
            await _bench_rows(args, policy, prm_engine_verifier, problems, limits, fmt, settings, prefill, rows)
    finally:
        await prm_engine_verifier.close()
        await policy.close()
    report = {"settings": settings, "machine": _machine(), "rows": rows}
    _print_table(rows)
    return report


async def _bench_rows(
    args: argparse.Namespace,
    policy: Any,
    prm_engine_verifier: Any,
    problems: list[Any],
    limits: Any,
    fmt: Any,
    settings: dict[str, Any],
    prefill: Any,
    rows: list[dict[str, Any]],
) -> None:
    from benchmarks.baselines.lockstep import run_lockstep
    from benchmarks.decode_limit import RecordingPolicy
    from ttsearch.backends.vllm.verifier import VLLMVerifier
    from ttsearch.core.searcher import Searcher

    def verifier(reuse: bool) -> VLLMVerifier:
        return VLLMVerifier(
            prm_engine_verifier.engine,
            prm_engine_verifier.tokenizer,
            format=fmt,
            max_in_flight=args.prm_in_flight,
            reuse_prefix=reuse,
        )

    engines = (policy.engine, prm_engine_verifier.engine)
    # Every method at the smallest N first: a run cut short by a time limit still has
    # every method (the JSON is rewritten after every row).
    for n in args.ns:
        for method in args.methods:
            strategy = _strategies(method, n, args.width, args.temperature, args.reduction)
            has_baseline = method in LOCKSTEP_METHODS
            ways = [w for w in args.order if has_baseline or w == "ttsearch"] or ["ttsearch"]
            row: dict[str, Any] = {
                "method": method,
                "n": n,
                "strategy": repr(strategy),
                "baseline": "lockstep"
                if has_baseline
                else "none (ttsearch only: no lockstep baseline for this method)",
            }
            tag = "" if has_baseline else " (ttsearch only: no lockstep baseline)"
            results_by_way: dict[str, list[Any]] = {}
            recorded: dict[str, RecordingPolicy] = {}
            for way in ways:
                await _reset_caches(*engines)
                before = prefill.snapshot() if prefill is not None else None
                started = time.perf_counter()
                recorder = RecordingPolicy(policy)
                counted_policy, counted_prm = _Counted(recorder), _Counted(verifier(way == "ttsearch"))
                async with _Heartbeat(
                    f"{method} N={n} {way}", len(problems), args.heartbeat, counted_policy, counted_prm
                ) as progress:
                    if way == "ttsearch":
                        searcher = Searcher(
                            counted_policy,
                            counted_prm,
                            limits=limits,
                            seed=args.seed,
                            keep_trees=False,
                            close_backends=False,
                            max_concurrent_problems=args.max_concurrent,
                            max_policy_requests=args.max_policy_requests,
                        )
                        results = []
                        async for r in searcher.solve_all(problems, strategy):
                            results.append(r)
                            progress.done = len(results)
                    else:
                        deadline = started + args.lockstep_time_limit if args.lockstep_time_limit else None
                        results = await run_lockstep(
                            problems,
                            strategy,
                            counted_policy,
                            counted_prm,
                            limits=limits,
                            seed=args.seed,
                            deadline=deadline,
                            on_batch=progress.set,
                        )
                results_by_way[way] = results
                recorded[way] = recorder
                row[way] = _summary(results, time.perf_counter() - started)
                s = row[way]
                s["policy_requests"] = len(recorder.requests)
                if before is not None:
                    s["policy_prefill"] = prefill.since(before)
                partial = (
                    f" (time limit: {s['problems']} of {len(problems)} problems)"
                    if s["problems"] < len(problems)
                    else ""
                )
                print(
                    f"  {method:6s} N={n:<4d} {way:9s} {s['seconds']:7.1f} s  {s['problems_per_s']:6.2f} problems/s  "
                    f"{s['generated_tok_per_s']:7.0f} gen tok/s  per problem: {s['generated_per_problem']:7.0f} generated, "
                    f"PRM {s['prm_computed_per_problem']:7.0f} computed + {s['prm_cached_per_problem']:6.0f} cached "
                    f"({s['prm_computed_over_generated']:.2f}x generated), {s['prm_requests_per_problem']:5.1f} requests; "
                    f"{s['candidates']} candidates{partial}{tag}",
                    flush=True,
                )
            rows.append(row)
            _write(args.out, {"settings": settings, "machine": _machine(), "rows": rows})  # so far
            if args.decode_limit:
                await _decode_limit(args, row, ways, recorded, policy, engines, prefill, len(problems))
                _write(args.out, {"settings": settings, "machine": _machine(), "rows": rows})
            if len(ways) < 2:
                continue
            # Per-problem rates, so a lockstep run cut by --lockstep-time-limit (the first k
            # problems) still compares; candidates are compared on those k problems.
            row["speedup"] = row["ttsearch"]["problems_per_s"] / row["lockstep"]["problems_per_s"]
            covered = {r.index for r in results_by_way["lockstep"]}
            ours = sum(len(r.candidates) for r in results_by_way["ttsearch"] if r.index in covered)
            theirs = row["lockstep"]["candidates"]
            row["same_candidate_count"] = ours == theirs
            row["compared_problems"] = len(covered)
            print(
                f"  {method:6s} N={n:<4d} speed-up {row['speedup']:.2f}x (problems/s); candidates "
                f"{'equal' if ours == theirs else 'DIFFER'} ({ours} vs {theirs} on {len(covered)} problems)",
                flush=True,
            )
            _write(args.out, {"settings": settings, "machine": _machine(), "rows": rows})


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
        f"  {'method':6s} {'N':>4s} {'run':9s} {'wall s':>8s} {'limit s':>8s} {'ratio':>6s} {'ok':3s} "
        f"{'generated':>10s} {'PRM computed':>12s}  baseline"
    )
    print(header)
    for row in rows:
        limit = row.get("decode_limit")
        if limit is None:
            continue
        for way in ("ttsearch", "lockstep"):
            s = row.get(way)
            if s is None:
                continue
            ratio = s.get("over_decode_limit")
            ok = "" if ratio is None else ("yes" if ratio <= DECODE_LIMIT_TARGET else "NO")
            print(
                f"  {row['method']:6s} {row['n']:4d} {way:9s} {s['seconds']:8.1f} {limit['seconds']:8.1f} "
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


async def _start(args: argparse.Namespace) -> tuple[Any, Any, list[Any], Any, Any, dict[str, Any]]:
    from ttsearch.backends.startup import start_together
    from ttsearch.backends.vllm.policy import VLLMPolicy
    from ttsearch.backends.vllm.verifier import VLLMVerifier
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
        "max_policy_requests": args.max_policy_requests,
        "decode_limit": args.decode_limit,
    }
    if str(args.models) == "toy":
        from ttsearch.toy.backends import TOY_MAX_SOLUTION_TOKENS, TOY_PRM_FORMAT, start_toy_engines
        from ttsearch.toy.task import HELD_OUT_SEED, make_problems

        policy, verifier = await start_toy_engines(
            seed=args.seed,
            policy_kv_bytes=args.policy_kv_mib << 20,
            prm_kv_bytes=args.prm_kv_mib << 20,
            max_num_seqs=args.max_num_seqs,
        )
        settings.update(policy_kv_mib=args.policy_kv_mib, prm_kv_mib=args.prm_kv_mib, max_num_seqs=args.max_num_seqs)
        problems = make_problems(args.problems, seed=HELD_OUT_SEED)
        limits = SearchLimits(max_solution_tokens=TOY_MAX_SOLUTION_TOKENS)
        settings["dataset"] = "toy held-out problems"
        return policy, verifier, problems, limits, TOY_PRM_FORMAT, settings

    from ttsearch import RLHFLOW, load_math500

    models = Path(args.models)
    engine = dict(dtype="bfloat16", max_model_len=args.max_model_len, enforce_eager=args.eager, seed=args.seed)
    if args.block_size:
        engine["engine_options"] = {"block_size": args.block_size}
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
        prm_engine["engine_options"] = {**prm_engine.get("engine_options", {}), "load_format": "dummy"}
        settings["prm_weights"] = "dummy (vLLM load_format)"
    policy, verifier = await start_together(
        partial(
            VLLMPolicy.from_pretrained,
            models / "policy",
            max_num_seqs=args.max_num_seqs,
            **memory[0],
            **engine,
        ),
        partial(
            VLLMVerifier.from_pretrained,
            models / "prm",
            format=RLHFLOW,
            max_num_seqs=args.max_num_seqs,
            **memory[1],
            **prm_engine,
        ),
    )
    problems = load_math500(args.dataset, limit=args.problems)
    limits = SearchLimits(max_solution_tokens=args.max_tokens)
    settings.update(dataset=str(args.dataset), max_tokens=args.max_tokens, prm_format="rlhflow")
    return policy, verifier, problems, limits, RLHFLOW, settings


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
        choices=["ttsearch", "lockstep"],
        help="which runs first (one of them: that one only)",
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
        "batch): the row then compares per-problem rates over the problems run",
    )
    parser.add_argument(
        "--heartbeat",
        type=float,
        default=30.0,
        metavar="S",
        help="print progress every S seconds during a run (0: never)",
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
    os._exit(0)  # engines' background threads must not keep the process alive


if __name__ == "__main__":
    main()
