"""Studies on a real local Ray cluster (two workers, toy engines on the CPU): the records
equal a single-process run's, a worker killed by PID mid-run is restarted with no record
lost or repeated, and a directory moves between Ray and one process in both directions
(half done by one, finished by the other) without losing or repeating a search.

Engine start-up dominates (each worker starts a policy and a PRM engine): the single-
process engines start once for the module and serve both the reference run and a resume.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ttsearch.cli.experiment import TOY_RECIPE
from ttsearch.records import read_records
from ttsearch.study import prepare, run_experiment
from ttsearch.study.cluster import run_experiment_on_ray
from ttsearch.study.engines import start_backends
from ttsearch.study.recipe import Recipe, load_recipe

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

PROBLEMS = 16
# Workers start their engines in their own process: ~30% faster start-up here, same search speed.
FAST_START = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
WORKER_TITLE = b"ray::SearchWorker"  # a worker actor's process title


def _recipe_file(folder: Path) -> Path:
    data = yaml.safe_load(TOY_RECIPE.read_text())
    data["dataset"]["end"] = PROBLEMS
    data["strategies"] = [
        {"strategy": "best_of_n", "n": [4], "reduction": "min"},
        {"strategy": "beam", "n": [4], "width": 2, "reduction": "min"},
    ]
    data["seeds"] = [0, 1]  # 4 runs x 16 problems
    data["execution"] = {"max_concurrent_problems": 4, "fsync_seconds": 0, "keep_trees": True}
    data["ray"] = {"workers": 2, "max_restarts": 2, "env_vars": FAST_START}
    path = folder / "ray-toy.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _recipe_file(tmp_path_factory.mktemp("ray-recipe"))


@pytest.fixture(scope="module")
async def engines(recipe_file: Path) -> AsyncIterator[tuple[Any, Any]]:
    """This process's policy and PRM: the reference run and the resume without Ray. (Not
    with FAST_START: an engine in the event loop's process searches ~10x slower.)"""
    policy, verifier = await start_backends(prepare(load_recipe(recipe_file)))
    try:
        yield policy, verifier
    finally:
        await policy.close()
        if verifier is not None:
            await verifier.close()


@pytest.fixture(scope="module")
async def reference(recipe_file: Path, engines: tuple[Any, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The study run in one process, start to end."""
    out = tmp_path_factory.mktemp("ray-reference") / "single"
    summary = await run_experiment(load_recipe(recipe_file), out, backends=engines, progress=False, report=False)
    assert summary.searched == 4 * PROBLEMS and summary.failed == 0
    return out


def _lines(out: Path) -> dict[str, list[str]]:
    return {p.name: p.read_text().splitlines(keepends=True) for p in sorted((out / "runs").glob("*.jsonl"))}


def _searches(out: Path) -> dict[tuple[str, str], Any]:
    """What a search found, per (run, problem): the answer and the candidates (not timings
    or token counts, which depend on what else shared the engines)."""
    found: dict[tuple[str, str], Any] = {}
    for path in sorted((out / "runs").glob("*.jsonl")):
        for record in read_records(path):
            key = (path.stem, record["unique_id"])
            assert key not in found, f"{key} recorded twice"
            found[key] = (
                record["answer"],
                record["correct"],
                record["error"],
                [(c["text"], c["answer"], c["score"], c["finish"]) for c in record["candidates"]],
            )
    return found


def _assert_each_search_once_as_in(out: Path, reference: Path) -> None:
    for name, lines in _lines(out).items():
        ids = [json.loads(line)["unique_id"] for line in lines]
        assert len(ids) == len(set(ids)) == PROBLEMS, f"{name}: every problem exactly once"
    got, want = _searches(out), _searches(reference)
    assert got.keys() == want.keys()
    differ = sorted(key for key in want if got[key] != want[key])
    assert not differ, f"{len(differ)} searches differ from the single-process run's, e.g. {differ[:3]}"


def _assert_a_tree_for_every_record(out: Path) -> None:
    """`execution.keep_trees`: each record's search tree is in trees/<run>.jsonl (the last
    line of a problem counts), with the record's answer and one node per candidate."""
    for path in sorted((out / "runs").glob("*.jsonl")):
        trees = {}
        for line in (out / "trees" / path.name).read_text().splitlines():
            tree = json.loads(line)
            trees[tree["unique_id"]] = tree
        records = {record["unique_id"]: record for record in read_records(path)}
        assert trees.keys() == records.keys(), f"{path.name}: a tree for every record"
        for uid, record in records.items():
            tree = trees[uid]
            assert tree["answer"] == record["answer"] and len(tree["candidates"]) == len(record["candidates"])
            nodes = {node["id"] for node in tree["tree"]["nodes"]}
            assert set(tree["candidates"]) <= nodes


def _half_done(reference: Path, out: Path) -> dict[str, list[str]]:
    """A copy of `reference` as a kill would leave it: the first half of each run's records."""
    shutil.copytree(reference, out)
    half = {}
    for name, lines in _lines(reference).items():
        half[name] = lines[: len(lines) // 2]
        (out / "runs" / name).write_text("".join(half[name]))
        kept = {json.loads(line)["unique_id"] for line in half[name]}
        trees = (out / "trees" / name).read_text().splitlines(keepends=True)
        (out / "trees" / name).write_text("".join(t for t in trees if json.loads(t)["unique_id"] in kept))
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["finished_at"] = None
    (out / "manifest.json").write_text(json.dumps(manifest))
    return half


def _worker_pids() -> set[int]:
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(WORKER_TITLE):
                    pids.add(int(entry.name))
            except OSError:
                continue  # ended meanwhile
    return pids


def _children(pid: int) -> set[int]:
    """The processes whose parent is `pid` (a worker's vLLM engine processes)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def _alive(pids: set[int]) -> set[int]:
    return {pid for pid in pids if Path(f"/proc/{pid}").exists()}


async def _wait_for(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def test_a_ray_run_finishes_a_single_process_run_and_survives_a_killed_worker(
    recipe_file: Path, reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "exp"
    half = _half_done(reference, out)
    already = sum(len(lines) for lines in half.values())
    recipe: Recipe = load_recipe(recipe_file)
    run = asyncio.create_task(run_experiment_on_ray(recipe, out, progress=False, report=False))
    try:
        # Kill a worker (by PID, as the kernel's OOM killer or an operator would) once both
        # are searching and a few new records are in.
        await _wait_for(
            lambda: run.done() or sum(len(v) for v in _lines(out).values()) >= already + 3, 400, "new records"
        )
        assert not run.done(), "the run ended before a worker could be killed"
        pids = _worker_pids()
        assert len(pids) == 2
        victim = min(pids)
        engines = _children(victim)
        os.kill(victim, signal.SIGKILL)
        # Ray starts the actor again in a new process (the driver then starts its engines).
        await _wait_for(lambda: run.done() or len(_worker_pids() - {victim}) == 2, 120, "the worker's restart")
        restarted = len(_worker_pids() - {victim}) == 2
        summary = await asyncio.wait_for(run, 500)
    finally:
        run.cancel()
    assert restarted, "Ray did not start the killed worker again"
    assert summary.resumed == already and summary.searched == 4 * PROBLEMS - already and summary.failed == 0
    for name, lines in _lines(out).items():
        assert lines[: len(half[name])] == half[name], f"{name}: earlier records kept as written"
    _assert_each_search_once_as_in(out, reference)
    _assert_a_tree_for_every_record(out)  # half of them sent back by the Ray workers
    session = json.loads((out / "manifest.json").read_text())["sessions"][-1]
    assert session["ray"] == {"workers": 2, "restarts": 1, "given_up": 0}
    await _wait_for(lambda: not _worker_pids(), 60, "the workers to end with the run")
    await _wait_for(lambda: not _alive(engines), 60, "the killed worker's engine processes to be reaped")


def _command(recipe: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "ttsearch.cli.app", "experiment", str(recipe), "--out", str(out)]


async def test_a_ray_run_stopped_midway_resumes_without_ray(
    recipe_file: Path, reference: Path, engines: tuple[Any, Any], tmp_path: Path
) -> None:
    # The command line, as a user runs it: `--ray` starts a local cluster for the run.
    out, log = tmp_path / "exp", tmp_path / "ray-run.log"
    with log.open("w") as sink:
        proc = await asyncio.create_subprocess_exec(
            *_command(recipe_file, out),
            "--quiet",
            "--no-report",
            "--ray",
            *("--set", "ray.workers=1"),  # one engine pair: the point here is the hand-over, not the spread
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        await _wait_for(
            lambda: (
                proc.returncode is not None or ((out / "runs").is_dir() and sum(map(len, _lines(out).values())) >= 5)
            ),
            400,
            "records of the Ray run",
        )
        assert proc.returncode is None, f"the Ray run ended before it was stopped:\n{log.read_text()[-3000:]}"
        proc.send_signal(signal.SIGTERM)  # a scheduler's stop: the driver closes its workers and its cluster
        await asyncio.wait_for(proc.wait(), 120)
        await _wait_for(lambda: not _worker_pids(), 60, "the workers to end with the driver")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        await proc.wait()
    assert proc.returncode != 0
    before = _lines(out)
    done_before = sum(len(lines) for lines in before.values())
    assert 5 <= done_before < 4 * PROBLEMS
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["finished_at"] is None and manifest["sessions"][-1]["ray"]["workers"] == 1

    summary = await run_experiment(load_recipe(recipe_file), out, backends=engines, progress=False, report=False)
    assert summary.resumed == done_before and summary.searched == 4 * PROBLEMS - done_before
    for name, lines in _lines(out).items():
        complete = [line for line in before.get(name, []) if line.endswith("\n")]
        assert lines[: len(complete)] == complete, f"{name}: the Ray run's records kept as written"
    _assert_each_search_once_as_in(out, reference)
    assert json.loads((out / "manifest.json").read_text())["finished_at"]
