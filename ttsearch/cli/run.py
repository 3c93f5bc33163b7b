"""`ttsearch run`: one strategy at one N over a dataset, as a one-entry experiment.

The flags build a recipe (`recipe_from_run_flags`); from there it is `ttsearch
experiment`: the same preflight, engines, results store, resume rules and report. The
results are the experiment directory `--out` (`runs/<strategy>-n<N>-s<seed>.jsonl`, see
docs/records.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from ttsearch.cli.experiment import print_results, run_recipe
from ttsearch.strategies.registry import STRATEGIES
from ttsearch.study.recipe import Recipe, apply_overrides, parse_recipe

__all__ = ["recipe_from_run_flags", "run_command"]

# Flags that become the strategy entry's own options (when given).
_STRATEGY_FLAGS = ("width", "max_depth", "lookahead", "temperature", "top_p", "reduction", "selection")


def recipe_from_run_flags(args: argparse.Namespace) -> Recipe:
    """The one-entry recipe `ttsearch run`'s flags describe.

    :raises ValueError: no policy, or a strategy that needs a PRM without one (naming the
        flags to pass); `RecipeError` for whatever the recipe itself refuses.
    """
    if not args.policy and not args.policy_url:
        raise ValueError("pass --policy (a model to run in-process) or --policy-url (vLLM servers)")
    needs_prm = STRATEGIES[args.strategy].needs_verifier
    if needs_prm and not args.prm and not args.prm_url:
        raise ValueError(f"strategy {args.strategy!r} needs a PRM: pass --prm or --prm-url (and --prm-format)")
    if args.out.suffix == ".jsonl":
        raise ValueError(
            f"--out {args.out}: `ttsearch run` writes an experiment directory (results in DIR/runs/*.jsonl, "
            "docs/records.md); pass a directory"
        )
    policy: dict[str, Any] = {
        "model": args.policy,
        "url": list(args.policy_url or []),
        "tokenizer": args.tokenizer,
        "date_string": args.date_string,
        "data_parallel_size": args.policy_data_parallel_size,
        "kv_cache": args.policy_kv_cache,
        "memory_fraction": args.policy_memory_fraction,
        **_engine_flags(args),
    }
    prm: dict[str, Any] | None = None
    if needs_prm:
        prm = {
            "model": args.prm,
            "url": list(args.prm_url or []),
            "tokenizer": args.prm_tokenizer,
            "format": args.prm_format,
            "mode": args.prm_mode,
            "data_parallel_size": args.prm_data_parallel_size,
            "kv_cache": args.prm_kv_cache,
            "memory_fraction": args.prm_memory_fraction,
            **_engine_flags(args),
        }
    entry: dict[str, Any] = {"strategy": args.strategy, "n": [args.n]}
    entry.update({flag: getattr(args, flag) for flag in _STRATEGY_FLAGS if getattr(args, flag) is not None})
    entry.update(_options(args.strategy_options))
    system_prompt = args.system_prompt_file.read_text(encoding="utf-8") if args.system_prompt_file else None
    data: dict[str, Any] = {
        "name": f"run-{args.strategy}-n{args.n}",
        "policy": {k: v for k, v in policy.items() if v is not None},
        "prm": None if prm is None else {k: v for k, v in prm.items() if v is not None},
        "dataset": {"source": args.dataset, "end": args.limit},
        "sampling": {
            "max_tokens": args.max_solution_tokens,
            "system_prompt": system_prompt,
            "revision_instruction": args.revision_instruction,
        },
        "strategies": [entry],
        "seeds": [args.seed],
        "execution": {
            "max_concurrent_problems": args.max_concurrent_problems,
            "request_timeout": args.request_timeout,
        },
    }
    return parse_recipe(apply_overrides(data, args.overrides), base_dir=Path.cwd(), where="ttsearch run")


def run_command(args: argparse.Namespace) -> int:
    recipe = recipe_from_run_flags(args)
    summary = run_recipe(recipe, args.out, args, shard=None)
    print_results(summary, args.out)
    return 0


def _options(texts: list[str]) -> dict[str, Any]:
    """`--option KEY=VALUE` pairs (YAML values); the plan checks them against the strategy."""
    options: dict[str, Any] = {}
    for text in texts:
        key, sep, raw = text.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--option {text!r}: expected KEY=VALUE, e.g. --option softmax_temperature=0.5")
        try:
            options[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as error:
            raise ValueError(f"--option {text!r}: the value is not valid YAML: {error}") from None
    return options


def _engine_flags(args: argparse.Namespace) -> dict[str, Any]:
    return {"dtype": args.dtype, "max_model_len": args.max_model_len, "enforce_eager": args.enforce_eager}
