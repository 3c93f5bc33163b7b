"""Search throughput: beam search with all problems in flight vs one problem at a time.

Builds a calibrated random-weight Llama policy (real Llama 3 tokenizer and prompt, steps
end on "\\n\\n" and solutions on <|eot_id|> at realistic rates; see
shared/calibrated-models.md) and a tiny random-weight PRM in the RLHFlow format (scored
generatively, prefix-cache friendly), starts both vLLM engines in this process, and runs
the same beam search over the first P MATH-500 problems twice: all problems at once
(`solve_all`) and sequentially (`solve` one by one). Prints problems/second for each.

    .venv/bin/python benchmarks/bench_search.py [--problems 8 --n 8 --width 4 --max-tokens 256]

Numbers depend on the machine; the README records them with the machine they came from.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TTSEARCH_SHARED", REPO.parent / "shared"))
sys.path.insert(0, str(REPO))  # the development tools (tools/) build the tiny models


async def bench(args: argparse.Namespace) -> None:
    from tools.tiny_models import build_tiny_llama
    from tools.tiny_prms import build_tiny_llama_prm
    from ttsearch import RLHFLOW, BeamSearch, Searcher, SearchLimits, VLLMPolicy, VLLMVerifier, load_math500
    from ttsearch.backends.startup import start_together

    tokenizer = SHARED / "tokenizers" / "llama3"
    problems = load_math500(SHARED / "data" / "math500.jsonl", limit=args.problems)
    tmp = Path(tempfile.mkdtemp(prefix="ttsearch-bench-"))
    policy_dir = build_tiny_llama(
        tmp / "policy", tokenizer_dir=tokenizer, hidden_size=256, num_heads=4, p_step=1 / 60, p_eos=1 / 600
    )
    prm_dir = build_tiny_llama_prm(tmp / "prm", tokenizer_dir=tokenizer)
    t0 = time.perf_counter()
    policy, verifier = await start_together(
        partial(
            VLLMPolicy.from_pretrained,
            policy_dir,
            dtype="bfloat16",
            max_model_len=4096,
            kv_cache_memory_bytes=args.policy_kv_mib << 20,
            enforce_eager=True,
        ),
        partial(
            VLLMVerifier.from_pretrained,
            prm_dir,
            format=RLHFLOW,
            dtype="bfloat16",
            max_model_len=4096,
            kv_cache_memory_bytes=args.prm_kv_mib << 20,
            enforce_eager=True,
        ),
    )
    print(f"engines started in {time.perf_counter() - t0:.1f} s")
    strategy = BeamSearch(n=args.n, width=args.width, max_depth=args.max_depth)
    limits = SearchLimits(max_solution_tokens=args.max_tokens)

    async with Searcher(policy, verifier, limits=limits, seed=0, keep_trees=False) as searcher:
        await searcher.solve(problems[0], BeamSearch(n=args.width, width=args.width, max_depth=2))  # warm-up

        t0 = time.perf_counter()
        concurrent = [r async for r in searcher.solve_all(problems, strategy)]
        t_concurrent = time.perf_counter() - t0

        t0 = time.perf_counter()
        sequential = [await searcher.solve(p, strategy) for p in problems]
        t_sequential = time.perf_counter() - t0

    def tokens(results) -> int:  # type: ignore[no-untyped-def]
        return sum(r.usage.generated_tokens for r in results)

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs ({platform.processor() or 'cpu'}), vLLM CPU backend")
    print(
        f"beam search N={args.n} M={args.width} max_depth={args.max_depth} "
        f"max_tokens={args.max_tokens}, {len(problems)} MATH-500 problems, tiny random policy + PRM"
    )
    for name, seconds, results in (
        ("all problems in flight", t_concurrent, concurrent),
        ("one problem at a time", t_sequential, sequential),
    ):
        print(
            f"  {name:24s} {len(results) / seconds:7.3f} problems/s  {seconds:7.1f} s  "
            f"{tokens(results) / seconds:8.0f} generated tok/s  "
            f"({sum(r.usage.policy_calls for r in results)} policy calls, "
            f"{sum(r.usage.verifier_calls for r in results)} PRM calls)"
        )
    print(f"  speed-up: {t_sequential / t_concurrent:.2f}x")
    sys.stdout.flush()
    os._exit(0)  # engines' background threads must not keep the process alive


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problems", type=int, default=8)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--width", type=int, default=4)
    parser.add_argument("--max-depth", type=int, default=40)
    parser.add_argument("--max-tokens", type=int, default=256, help="max generated tokens per solution")
    parser.add_argument("--policy-kv-mib", type=int, default=512)
    parser.add_argument("--prm-kv-mib", type=int, default=256)
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
