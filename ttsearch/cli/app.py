"""The `ttsearch` command line: `demo`, `run` (a benchmark run on vLLM), `evaluate`, `report`, `export`.

ttsearch demo
ttsearch run --policy PATH --prm PATH --prm-format rlhflow --strategy beam --n 16 --out runs/beam16.jsonl
ttsearch run --policy-url http://gpu1:8000 http://gpu2:8000 --prm-url http://gpu3:8001 ... (vLLM servers)
ttsearch evaluate runs/beam16.jsonl --plot runs/beam16.png
ttsearch report runs/exp [runs/exp-shard2 ...] [--out runs/exp/report]
ttsearch export runs/exp --correct-only -o traces.jsonl
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from ttsearch.backends.chat import DEFAULT_DATE_STRING
from ttsearch.backends.prm_formats import PRM_FORMATS
from ttsearch.cli.demo import run_demo
from ttsearch.cli.experiment import add_ray_flag, run_experiment_command
from ttsearch.cli.fit_policy import add_fit_policy_parser, run_fit_policy
from ttsearch.cli.run import run_command
from ttsearch.cli.serve import add_serve_parser, run_serve_command
from ttsearch.errors import BackendError, GradingError, SearchError
from ttsearch.evaluation.tables import format_table as format_accuracy_table
from ttsearch.evaluation.tables import plot_accuracy, save_report_json
from ttsearch.strategies.registry import STRATEGIES
from ttsearch.study.benchmark import evaluate_results
from ttsearch.study.recipe import parse_size as parse
from ttsearch.study.report import build_report, export_traces, format_table, load_experiment, write_report

# Printed under `evaluate`'s tables: what a budget N means (issue #12 item 1).
BUDGET_NOTE = (
    "N: sampling strategies (majority, best_of_n) at every N up to the N they ran with, each the mean over the "
    "disjoint groups of N consecutive samples; stepwise strategies (beam, dvts, lookahead) only at the N they ran with."
)


def _budgets(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of budgets: {text!r} (example: 1,4,16)") from None
    if any(k < 1 for k in ks) or list(ks) != sorted(set(ks)):
        raise argparse.ArgumentTypeError(f"budgets must be positive and increasing: {text!r}")
    return ks


def parse_size(text: str) -> int:
    """'128MiB', '2g', '1048576' -> bytes."""

    try:
        return parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
    return value


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of seeds: {text!r} (example: 0,1,2)") from None
    return seeds


def _add_experiment_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe field (YAML value), e.g. --set sampling.temperature=1.0 --set strategies.beam.width=8",
    )
    parser.add_argument("--restart", action="store_true", help="the recipe changed: move old results aside, start over")
    parser.add_argument(
        "--retry-failed",
        action="store_true",
        help="search again the problems whose record has an error (a plain rerun keeps them as done); "
        "their new records replace the old",
    )
    parser.add_argument("--verbose", action="store_true", help="show vLLM's own log lines (hidden by default)")
    parser.add_argument("--quiet", action="store_true", help="no progress display")
    parser.add_argument("--no-report", action="store_true", help="do not write the report at the end")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ttsearch", description="Test-time search for LLM math reasoning.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo",
        help="the toy world through the experiment runner on CPU (recipes/toy-quick.yaml, ~3 minutes): "
        "table, plots, HTML report",
    )
    demo.add_argument(
        "--full",
        action="store_true",
        help="the full 17-run study instead (recipes/toy.yaml: lookahead too, every N from 1 to 16)",
    )
    demo.add_argument("--problems", type=int, help="held-out toy problems (default: the recipe's, 50; --full: 100)")
    demo.add_argument(
        "--out",
        type=Path,
        help="experiment directory (reruns resume; default runs/demo, or runs/demo-full with --full)",
    )
    demo.add_argument("--seeds", type=_seeds, help="seeds, comma-separated (default: the recipe's, 0)")
    _add_experiment_flags(demo)

    exp_run = sub.add_parser(
        "experiment", help="run a recipe: every strategy x N x seed on warm engines, resumable, then the report"
    )
    exp_run.add_argument("recipe", type=Path, help="recipe YAML (see recipes/)")
    exp_run.add_argument("--out", type=Path, help="experiment directory (default runs/<recipe name>); reruns resume")
    exp_run.add_argument("--seeds", type=_seeds, help="override the recipe's seeds, comma-separated")
    exp_run.add_argument("--shard", help="run shard i of k of the dataset (i/k, e.g. 0/4); `report` merges shard dirs")
    exp_run.add_argument("--check", action="store_true", help="validate the recipe and print the plan; start nothing")
    _add_experiment_flags(exp_run)
    add_ray_flag(exp_run)

    run = sub.add_parser(
        "run",
        help="one strategy at one N over a dataset with vLLM: a one-entry experiment (resumable, with the report)",
    )
    run.add_argument(
        "--policy", help="policy model path or Hugging Face id (with --policy-url: the model the servers must serve)"
    )
    run.add_argument(
        "--policy-url",
        nargs="+",
        metavar="URL",
        help="use running vLLM OpenAI-compatible servers for the policy instead of an in-process engine "
        "(several: one replica each; a problem sticks to one)",
    )
    run.add_argument("--tokenizer", help="policy tokenizer (default: the model's, or the one the servers loaded)")
    run.add_argument("--prm", help="PRM model path or id (needed by every strategy except majority)")
    run.add_argument("--prm-url", nargs="+", metavar="URL", help="use running vLLM servers for the PRM")
    run.add_argument("--prm-tokenizer", help="PRM tokenizer with --prm-url (default: --prm, or the servers' model)")
    run.add_argument(
        "--request-timeout",
        type=float,
        default=600.0,
        help="seconds a server may take for one request before it counts as down (default 600)",
    )
    run.add_argument("--prm-format", choices=sorted(PRM_FORMATS), default="rlhflow")
    run.add_argument("--prm-mode", choices=("auto", "generative", "pooling"), default="auto")
    run.add_argument("--strategy", choices=sorted(STRATEGIES), required=True)
    run.add_argument("--n", type=int, required=True, help="candidates per problem (N)")
    run.add_argument("--width", type=int, help="beam width M (beam, dvts, lookahead)")
    run.add_argument("--max-depth", type=int, help="max steps (beam, dvts, lookahead; default 40)")
    run.add_argument("--lookahead", type=int, help="greedy rollout steps (lookahead)")
    run.add_argument("--temperature", type=float)
    run.add_argument("--top-p", type=float)
    run.add_argument(
        "--option",
        dest="strategy_options",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other option of the strategy (YAML value), e.g. --option softmax_temperature=0.5 "
        "--option iterations=4 --option c_uct=2",
    )
    run.add_argument("--reduction", choices=("last", "min", "prod"))
    run.add_argument("--selection", choices=("majority", "naive", "weighted"))
    run.add_argument("--dataset", default="HuggingFaceH4/MATH-500", help="JSONL path or HF dataset id")
    run.add_argument("--limit", type=int, help="only the first K problems")
    run.add_argument(
        "--out", type=Path, required=True, help="experiment directory (results in OUT/runs/*.jsonl; reruns resume)"
    )
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--max-solution-tokens", type=int, default=2048)
    run.add_argument("--max-model-len", type=int, default=4096)
    run.add_argument("--max-concurrent-problems", type=int, default=64)
    run.add_argument("--policy-kv-cache", type=parse_size, help="policy KV cache size, e.g. 8GiB")
    run.add_argument("--prm-kv-cache", type=parse_size, help="PRM KV cache size, e.g. 4GiB")
    run.add_argument("--policy-memory-fraction", type=float, help="policy gpu_memory_utilization")
    run.add_argument("--prm-memory-fraction", type=float, help="PRM gpu_memory_utilization")
    run.add_argument(
        "--policy-data-parallel-size",
        type=_positive,
        default=1,
        metavar="K",
        help="vLLM data-parallel ranks of the in-process policy engine (one model copy each, e.g. one per GPU; "
        "a problem's requests stay on one rank). Default 1",
    )
    run.add_argument(
        "--prm-data-parallel-size",
        type=_positive,
        default=1,
        metavar="K",
        help="vLLM data-parallel ranks of the in-process PRM engine. Default 1",
    )
    run.add_argument("--system-prompt-file", type=Path, help="system prompt (default: Meta's Llama 3 math prompt)")
    run.add_argument(
        "--revision-instruction",
        help="revisions: a user turn after each earlier attempt, for instruct models not trained to revise "
        "('default': ttsearch.prompts.REVISION_INSTRUCTION; none by default)",
    )
    run.add_argument(
        "--date-string",
        default=DEFAULT_DATE_STRING,
        help=f"date a Llama 3.x chat template prints as 'Today Date' (default {DEFAULT_DATE_STRING!r}, fixed so "
        "results do not change by the day)",
    )
    run.add_argument("--dtype", default="auto")
    run.add_argument("--enforce-eager", action="store_true", help="skip CUDA graphs / compilation")
    _add_experiment_flags(run)

    ev = sub.add_parser(
        "evaluate", help="accuracy at each budget N of one strategy's results files (seeds, or runs at several N)"
    )
    ev.add_argument("results", type=Path, nargs="+")
    ev.add_argument(
        "--ks", type=_budgets, help="budgets to report, comma-separated (default: every budget the runs have)"
    )
    ev.add_argument("--by", choices=("overall", "level", "subject"), default="overall")
    ev.add_argument("--plot", type=Path, help="save accuracy vs N to this PNG")
    ev.add_argument("--json", type=Path, help="save the report as JSON")

    rep = sub.add_parser("report", help="tables, plots and an HTML page for an experiment directory (or its shards)")
    rep.add_argument("dirs", type=Path, nargs="+", help="experiment directory; several: shards of one experiment")
    rep.add_argument("--out", type=Path, help="where the report goes (default: DIR/report of the first DIR)")

    exp = sub.add_parser("export", help="search traces as chat-format JSONL for fine-tuning, deduplicated")
    exp.add_argument("dirs", type=Path, nargs="+", help="experiment directory; several: shards of one experiment")
    exp.add_argument("-o", "--out", type=Path, required=True, help="output JSONL file")
    exp.add_argument("--correct-only", action="store_true", help="only solutions whose answer matches the gold answer")

    add_fit_policy_parser(sub)
    add_serve_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with _sigterm_as_interrupt():
        return _dispatch(args)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (`kill`, Slurm, Kubernetes) stops a command the way Ctrl-C does: the
    exception unwinds through the engines' `finally` blocks, so vLLM's engine processes
    are closed instead of outliving the run; finished records are already on disk."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _dispatch(args: argparse.Namespace) -> int:
    try:
        if args.command == "demo":
            run_demo(args)
        elif args.command == "experiment":
            return run_experiment_command(args)
        elif args.command == "run":
            return run_command(args)
        elif args.command == "report":
            _report(args)
        elif args.command == "export":
            _export(args)
        elif args.command == "fit-policy":
            run_fit_policy(args)
        elif args.command == "serve":
            return run_serve_command(args)
        else:
            _evaluate(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"ttsearch {args.command}: error: {error}", file=sys.stderr)
        return 2
    except (BackendError, SearchError, GradingError) as error:  # an engine or the grader failed; work is saved
        print(f"ttsearch {args.command}: error: {error}", file=sys.stderr)
        return 1
    return 0


def _evaluate(args: argparse.Namespace) -> None:

    report = evaluate_results(args.results, ks=args.ks)
    if args.by == "overall":
        print(format_accuracy_table(report.overall))
    else:
        tables = report.by_level if args.by == "level" else report.by_subject
        for key, table in tables.items():
            print(format_accuracy_table(table, title=f"{args.by} {key} ({table.num_problems} problems)"))
            print()
    print(BUDGET_NOTE)
    if args.plot:
        print(f"plot: {plot_accuracy(report.overall, args.plot)}")
    if args.json:
        print(f"report: {save_report_json(report, args.json)}")


def _report(args: argparse.Namespace) -> None:

    report = build_report(load_experiment(args.dirs))
    print(format_table(report))
    files = write_report(report, args.out if args.out is not None else args.dirs[0] / "report")
    print(f"report: {files.html}\nsummary: {files.summary}")


def _export(args: argparse.Namespace) -> None:

    done = export_traces(load_experiment(args.dirs), args.out, correct_only=args.correct_only)
    print(
        f"{done.written} traces written to {done.path} ({done.duplicates} duplicates"
        + (f", {done.incorrect} incorrect" if args.correct_only else "")
        + f", {done.skipped} empty skipped)"
    )


if __name__ == "__main__":
    raise SystemExit(main())
