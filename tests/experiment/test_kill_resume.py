"""Resume after SIGKILL of a real `ttsearch experiment` process (toy models, real vLLM
engines): nothing finished is lost, nothing is searched twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ttsearch.cli.experiment import TOY_RECIPE
from ttsearch.records import read_records

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

PROBLEMS = 16


def _recipe(tmp_path: Path) -> Path:
    data = yaml.safe_load(TOY_RECIPE.read_text())
    data["dataset"]["end"] = PROBLEMS
    # Majority voting needs no PRM: one engine to start (twice), which keeps the test short.
    data["strategies"] = [{"strategy": "majority", "n": [4]}]
    data["seeds"] = [0, 1]
    data["execution"] = {"max_concurrent_problems": 4, "fsync_seconds": 0}
    path = tmp_path / "kill.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _lines(out: Path) -> dict[str, list[str]]:
    return {p.name: p.read_text().splitlines(keepends=True) for p in sorted((out / "runs").glob("*.jsonl"))}


def _command(recipe: Path, out: Path) -> list[str]:
    return [
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


def _wait_for_records(proc: subprocess.Popen[bytes], out: Path, log: Path, *, before: str) -> None:
    """Wait (up to 400 s) until the running experiment has written 3 records."""
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / "runs").is_dir() and sum(len(v) for v in _lines(out).values()) >= 3:
            break
        time.sleep(0.2)
    assert proc.poll() is None, f"the run ended before {before}:\n{log.read_text()[-3000:]}"
    assert time.monotonic() < deadline, "no records appeared in time"


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process and everything in its session (vLLM's engine processes)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def test_sigkill_mid_run_then_rerun_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    recipe, out = _recipe(tmp_path), tmp_path / "exp"
    # Own session: the kill reaches vLLM's engine processes too, as a real kill -9 of a job would.
    log = tmp_path / "killed.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(_command(recipe, out), start_new_session=True, stdout=sink, stderr=subprocess.STDOUT)
    try:
        _wait_for_records(proc, out, log, before="it could be killed")
    finally:
        _kill_group(proc)
    before = _lines(out)
    done_before = sum(len(v) for v in before.values())
    assert 3 <= done_before < 2 * PROBLEMS
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["finished_at"] is None  # killed: the experiment says it is partial

    rerun = subprocess.run(_command(recipe, out), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert f"{done_before} already done" in rerun.stdout or "torn" in rerun.stderr
    after = _lines(out)
    for name, lines in after.items():
        ids = [r["unique_id"] for r in read_records(out / "runs" / name)]
        assert len(ids) == PROBLEMS and len(set(ids)) == PROBLEMS, name  # every problem once
        complete = [line for line in before.get(name, []) if line.endswith("\n")]
        assert lines[: len(complete)] == complete, name  # finished records kept as written
    assert json.loads((out / "manifest.json").read_text())["finished_at"]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigterm_closes_the_engines_and_keeps_finished_work(tmp_path: Path) -> None:
    # A scheduler's stop (Slurm, Kubernetes, `kill`) sends SIGTERM: vLLM's engine processes
    # must not outlive the run (they hold the GPU), and what finished stays on disk.
    recipe, out = _recipe(tmp_path), tmp_path / "exp"
    log = tmp_path / "terminated.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(_command(recipe, out), start_new_session=True, stdout=sink, stderr=subprocess.STDOUT)
    try:
        _wait_for_records(proc, out, log, before="SIGTERM")
        proc.send_signal(signal.SIGTERM)  # the driver only, as `kill PID` does
        proc.wait(timeout=120)
        deadline = time.monotonic() + 30  # engine processes exit after their owner closes them
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _group_alive(proc.pid), f"engine processes outlived the run:\n{log.read_text()[-3000:]}"
    finally:
        _kill_group(proc)
    assert proc.returncode != 0  # stopped, not finished
    assert sum(len(read_records(out / "runs" / name)) for name in _lines(out)) >= 3
    assert json.loads((out / "manifest.json").read_text())["finished_at"] is None
