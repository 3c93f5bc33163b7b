"""`ttsearch serve [RECIPE]`: the recipe's engines behind an OpenAI-compatible endpoint.

The engines start once (the recipe's `policy:` / `prm:` sections: in-process vLLM, or
vLLM servers by `url`); the recipe's strategy entries become the presets (`beam-16`).
Without a recipe: the shipped toy world (`recipes/toy-quick.yaml`), on a CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ttsearch.cli.experiment import TOY_QUICK_RECIPE
from ttsearch.study.engines import quiet_vllm_logs
from ttsearch.study.recipe import Recipe, load_recipe

__all__ = ["API_KEY_ENV", "add_serve_parser", "run_serve_command"]

API_KEY_ENV = "TTSEARCH_API_KEY"  # the API key when --api-key is not given


def add_serve_parser(sub: Any) -> None:
    """The `serve` subcommand's flags (`sub`: the parser's subparsers)."""
    serve = sub.add_parser(
        "serve",
        help="an OpenAI-compatible endpoint (/v1/chat/completions, /v1/completions) with search behind it",
    )
    serve.add_argument(
        "recipe", type=Path, nargs="?", help="recipe YAML: its engines and strategies (default: the toy world)"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument(
        "--api-key",
        help=f"require 'Authorization: Bearer KEY' on /v1/* (default: ${API_KEY_ENV} if set, else no key)",
    )
    serve.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe field (YAML value), e.g. --set 'policy.url=[http://gpu1:8000]'",
    )
    serve.add_argument("--policy-url", nargs="+", metavar="URL", help="vLLM servers for the policy (policy.url)")
    serve.add_argument("--prm-url", nargs="+", metavar="URL", help="vLLM servers for the PRM (prm.url)")
    serve.add_argument(
        "--max-concurrent-problems",
        type=int,
        help="searches running at once (default: the recipe's execution.max_concurrent_problems)",
    )
    serve.add_argument(
        "--max-queue", type=int, default=256, help="requests waiting for a search slot; past it: 429 (default 256)"
    )
    serve.add_argument("--max-n", type=int, default=1024, help="the largest search budget N a request may ask for")
    serve.add_argument(
        "--keep-trees",
        type=int,
        default=256,
        help="finished requests' search trees the live view (GET /) can still open; the oldest go first (default 256)",
    )
    serve.add_argument("--verbose", action="store_true", help="vLLM's log lines and every HTTP request")


def run_serve_command(args: argparse.Namespace) -> int:
    from ttsearch.serve import ServiceOptions  # FastAPI and uvicorn: only for this command

    recipe = _recipe(args)
    options = ServiceOptions(
        max_concurrent_problems=args.max_concurrent_problems,
        max_queue=args.max_queue,
        max_n=args.max_n,
        keep_trees=args.keep_trees,
    )
    if options.max_concurrent_problems is not None and options.max_concurrent_problems < 1:
        raise ValueError(f"--max-concurrent-problems must be >= 1, got {options.max_concurrent_problems}")
    if options.max_queue < 0:
        raise ValueError(f"--max-queue must be >= 0, got {options.max_queue}")
    if options.keep_trees < 0:
        raise ValueError(f"--keep-trees must be >= 0, got {options.keep_trees}")
    if not args.verbose:
        quiet_vllm_logs()
    asyncio.run(_serve(recipe, options, args, args.api_key or os.environ.get(API_KEY_ENV) or None))
    return 0


def _recipe(args: argparse.Namespace) -> Recipe:
    overrides = list(args.overrides)
    if args.policy_url:
        overrides.append(f"policy.url=[{', '.join(args.policy_url)}]")
    if args.prm_url:
        overrides.append(f"prm.url=[{', '.join(args.prm_url)}]")
    return load_recipe(args.recipe or TOY_QUICK_RECIPE, overrides)


async def _serve(recipe: Recipe, options: Any, args: argparse.Namespace, api_key: str | None) -> None:
    import uvicorn

    from ttsearch.serve import SearchService, create_app

    service = await SearchService.from_recipe(recipe, options)
    try:
        config = uvicorn.Config(
            create_app(service, api_key=api_key),
            host=args.host,
            port=args.port,
            log_level="info" if args.verbose else "warning",
            access_log=args.verbose,
            timeout_graceful_shutdown=5,  # a search still running at shutdown is cancelled after this
        )
        names = ", ".join(m.name for m in service.catalog.models)
        print(
            f"ttsearch serve: http://{args.host}:{args.port}/v1 (models: {names}; "
            f"API key {'required' if api_key else 'not required'}); "
            f"the live search view: http://{args.host}:{args.port}/",
            flush=True,
        )
        with _stop_signals_end_serving():
            await uvicorn.Server(config).serve()
    finally:
        await service.close()


@contextlib.contextmanager
def _stop_signals_end_serving() -> Iterator[None]:
    """uvicorn shuts down on SIGINT / SIGTERM, then raises the signal again for the handler
    it found. Python's would cancel the closing of the engines (SIGINT) or end the process
    before it (SIGTERM); a handler that does nothing lets `_serve` close them, then exit 0."""
    saved = {sig: signal.signal(sig, _ignore) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _ignore(signum: int, frame: object) -> None:
    pass
