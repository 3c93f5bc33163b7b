"""A sweep on warm engines vs the same points as separate processes.

`ttsearch experiment` starts the engines once and streams every (strategy, N, seed) run
through one searcher. Before it, each point was its own `ttsearch run` process, restarting
both engines (20-30 s each on a CPU, 50-220 s on a GPU). This times both ways on the same
recipe: once as one experiment, then each run of its plan as a one-point recipe in its
own `ttsearch experiment` process (the same code path, so only the engine restarts and the
lost cross-run batching differ). Prints both wall times and writes JSON.

    .venv/bin/python benchmarks/bench_sweep.py                       # the toy recipe, 30 problems
    .venv/bin/python benchmarks/bench_sweep.py --problems 100 --json runs/sweep.json
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from ttsearch.cli.experiment import TOY_RECIPE
from ttsearch.study import load_recipe, plan_runs


def _experiment(recipe: Path, out: Path) -> float:
    started = time.perf_counter()
    cmd = [
        sys.executable,
        "-m",
        "ttsearch.cli.app",
        "experiment",
        str(recipe),
        "--out",
        str(out),
        "--quiet",
        "--no-report",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", type=Path, default=TOY_RECIPE)
    parser.add_argument("--problems", type=int, default=30, help="dataset.end (default 30)")
    parser.add_argument("--labels", help="only these strategy entries, comma-separated (default: all)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    data = yaml.safe_load(args.recipe.read_text())
    data.setdefault("dataset", {})["end"] = args.problems
    if args.labels:
        wanted = args.labels.split(",")
        data["strategies"] = [e for e in data["strategies"] if e.get("label", e.get("strategy")) in wanted]
        if not data["strategies"]:
            raise SystemExit(f"no strategy entry labelled {wanted} in {args.recipe}")
    recipe_dir = args.recipe.resolve().parent
    # The recipes below live in a temp folder: make the original's relative paths absolute.
    for section, key in (("dataset", "source"), ("policy", "model"), ("prm", "model")):
        value = (data.get(section) or {}).get(key)
        if isinstance(value, str) and (recipe_dir / value).exists() and not Path(value).is_absolute():
            data[section][key] = str(recipe_dir / value)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        whole = tmp / "whole.yaml"
        whole.write_text(yaml.safe_dump(data))
        runs = plan_runs(load_recipe(whole))
        print(f"{len(runs)} runs x {args.problems} problems ({args.recipe.name})", flush=True)
        warm = _experiment(whole, tmp / "warm")
        print(f"one experiment, warm engines: {warm:.0f} s", flush=True)
        separate = 0.0
        for run in runs:
            entry = {k: v for k, v in run.config.items() if k != "n"}
            entry.update(label=run.label, n=[run.n] if run.kind == "stepwise" else list(run.budgets))
            point = dict(data, strategies=[entry], seeds=[run.seed])
            path = tmp / f"{run.run_id}.yaml"
            path.write_text(yaml.safe_dump(point))
            seconds = _experiment(path, tmp / run.run_id)
            separate += seconds
            print(f"  {run.run_id}: {seconds:.0f} s", flush=True)
        print(f"separate processes, one per run: {separate:.0f} s ({separate / warm:.2f}x the warm sweep)")
    result = {
        "recipe": str(args.recipe),
        "problems": args.problems,
        "runs": [r.run_id for r in runs],
        "warm_seconds": round(warm, 1),
        "separate_seconds": round(separate, 1),
        "ratio": round(separate / warm, 2),
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
