"""Throughput at equal search semantics: ttsearch vs a lockstep (search-and-learn) loop.

Runs beam search, DVTS and weighted best-of-N (each at every N of `--ns`) twice on the
SAME engines: with ttsearch (`Searcher.solve_all`: every problem in flight, PRM scoring
that reads the prefix cache) and with the lockstep baseline (`benchmarks/baselines/
lockstep.py`: per iteration one generate call for the batch's live beams, then the PRM
recomputes every beam's whole prefix, then selection; beam search one problem at a time).
Both run the same strategy objects at the same seed, so they sample the same steps; the
prefix caches are reset before every run (and each run gets fresh verifier wrappers), so
no run reads what another computed.

Prints, per method and N: wall time, problems/s, generated tok/s, PRM tokens sent /
read from the cache / computed per problem (and computed / generated), PRM requests,
candidates (checked equal between the two), and the speed-up; plus machine and versions.
Writes everything as JSON (`--out`).

    .venv/bin/python benchmarks/throughput.py                      # the toy world, 100 problems, N=16
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


def _strategies(name: str, n: int, width: int, temperature: float, reduction: str) -> Any:
    from ttsearch.strategies import DVTS, BeamSearch, BestOfN

    common = dict(temperature=temperature, reduction=reduction)
    if name == "beam":
        return BeamSearch(n=n, width=width, **common)
    if name == "dvts":
        return DVTS(n=n, width=width, **common)
    return BestOfN(n=n, selection="weighted", **common)


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
    from benchmarks.baselines.lockstep import run_lockstep
    from ttsearch.backends.vllm.verifier import VLLMVerifier
    from ttsearch.core.searcher import Searcher

    policy, prm_engine_verifier, problems, limits, fmt, settings = await _start(args)
    print(f"engines started; {len(problems)} problems; {settings}", flush=True)
    rows: list[dict[str, Any]] = []

    def verifier(reuse: bool) -> VLLMVerifier:
        return VLLMVerifier(
            prm_engine_verifier.engine,
            prm_engine_verifier.tokenizer,
            format=fmt,
            max_in_flight=args.prm_in_flight,
            reuse_prefix=reuse,
        )

    engines = (policy.engine, prm_engine_verifier.engine)
    try:
        # Every method at the smallest N first: a run cut short by a time limit still has
        # all three methods (the JSON is rewritten after every row).
        for n in args.ns:
            for method in args.methods:
                strategy = _strategies(method, n, args.width, args.temperature, args.reduction)
                row: dict[str, Any] = {"method": method, "n": n}
                results_by_way: dict[str, list[Any]] = {}
                for way in args.order:
                    await _reset_caches(*engines)
                    started = time.perf_counter()
                    counted_policy, counted_prm = _Counted(policy), _Counted(verifier(way == "ttsearch"))
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
                    row[way] = _summary(results, time.perf_counter() - started)
                    s = row[way]
                    partial = (
                        f" (time limit: {s['problems']} of {len(problems)} problems)"
                        if s["problems"] < len(problems)
                        else ""
                    )
                    print(
                        f"  {method:5s} N={n:<4d} {way:9s} {s['seconds']:7.1f} s  {s['problems_per_s']:6.2f} problems/s  "
                        f"{s['generated_tok_per_s']:7.0f} gen tok/s  per problem: {s['generated_per_problem']:7.0f} generated, "
                        f"PRM {s['prm_computed_per_problem']:7.0f} computed + {s['prm_cached_per_problem']:6.0f} cached "
                        f"({s['prm_computed_over_generated']:.2f}x generated), {s['prm_requests_per_problem']:5.1f} requests; "
                        f"{s['candidates']} candidates{partial}",
                        flush=True,
                    )
                rows.append(row)
                _write(args.out, {"settings": settings, "machine": _machine(), "rows": rows})  # so far
                if len(args.order) < 2:
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
                    f"  {method:5s} N={n:<4d} speed-up {row['speedup']:.2f}x (problems/s); candidates "
                    f"{'equal' if ours == theirs else 'DIFFER'} ({ours} vs {theirs} on {len(covered)} problems)",
                    flush=True,
                )
                _write(args.out, {"settings": settings, "machine": _machine(), "rows": rows})
    finally:
        await prm_engine_verifier.close()
        await policy.close()
    return {"settings": settings, "machine": _machine(), "rows": rows}


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
    cut by a time limit prints no result row)."""

    def __init__(self, label: str, total: int, every: float, policy: _Counted, prm: _Counted) -> None:
        self.label, self.total, self.every, self.done = label, total, every, 0
        self.policy, self.prm = policy, prm
        self._task: asyncio.Task[None] | None = None
        self._started = time.perf_counter()

    def set(self, done: int) -> None:
        self.done = done

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            t = time.perf_counter() - self._started
            print(
                f"    ... {self.label}: {self.done}/{self.total} problems after {t:.0f} s; policy "
                f"{self.policy.requests} calls ({self.policy.open} open), {self.policy.tokens} tokens "
                f"({self.policy.tokens / t:.0f}/s); PRM {self.prm.requests} calls ({self.prm.open} open), "
                f"{self.prm.tokens} tokens sent",
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
    parser.add_argument("--methods", nargs="+", default=["beam", "dvts", "bon"], choices=["beam", "dvts", "bon"])
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
