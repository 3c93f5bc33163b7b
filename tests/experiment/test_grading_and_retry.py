"""The runner when grading or a problem fails: an answer the grader could not grade is
recorded as ungraded (never as wrong) and graded on resume; `retry_failed` reruns exactly
the problems whose record has an error, replacing their records, and a kill -9 during the
retry loses nothing."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.experiment.helpers import recipe_data, write_dataset, write_recipe
from ttsearch.cli.app import build_parser
from ttsearch.errors import GradingError
from ttsearch.evaluation import grading
from ttsearch.records import read_records
from ttsearch.study import load_recipe, run_experiment
from ttsearch.study.progress import ExperimentProgress
from ttsearch.testing.scripted import EOS, ScriptCall, ScriptedPolicy, ScriptedVerifier

REPO_ROOT = Path(__file__).resolve().parents[2]

# Golds the in-process fast path cannot settle against the model's answer (a worker must),
# and one it can ("4" against "4").
PROBLEMS = [
    {"problem": "Expand (x+1)^2", "answer": "x^2+2x+1", "unique_id": "square"},
    {"problem": "Expand (x-1)^2", "answer": "x^2-2x+1", "unique_id": "square-minus"},
    {"problem": "What is 2+2?", "answer": "4", "unique_id": "four"},
]
MODEL_ANSWERS = {"Expand (x+1)^2": "(x+1)^2", "Expand (x-1)^2": "(x-1)^2", "What is 2+2?": "4"}


def algebra_script(call: ScriptCall) -> str:
    return f"\\boxed{{{MODEL_ANSWERS[call.problem]}}} [p=0.9]{EOS}"


def failing_script(failing: set[str]) -> Any:
    """The scripted model, except that a request for one of `failing` raises (the problem
    alone fails and gets an error record)."""

    def script(call: ScriptCall) -> str:
        if call.problem in failing:
            raise RuntimeError(f"scripted failure of {call.problem!r}")
        return algebra_script(call)

    return script


def backends(script: Any = algebra_script) -> tuple[ScriptedPolicy, ScriptedVerifier]:
    return ScriptedPolicy(script), ScriptedVerifier()


@pytest.fixture
def recipe_file(tmp_path: Path, llama3_tokenizer_dir: Path) -> Path:
    dataset = write_dataset(tmp_path / "problems.jsonl", PROBLEMS)
    data = recipe_data(dataset, llama3_tokenizer_dir, strategies=[{"strategy": "best_of_n", "n": [2]}], seeds=[0, 1])
    return write_recipe(tmp_path / "r.yaml", data)


def _records(out: Path) -> dict[str, dict[str, dict[str, Any]]]:
    return {p.stem: {r["unique_id"]: r for r in read_records(p)} for p in sorted((out / "runs").glob("*.jsonl"))}


def _break_the_grader(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every grader worker exits at once (as with a broken install); a fresh default grader."""
    monkeypatch.setattr(grading, "_WORKER_BOOT", "import sys; sys.exit(3)")
    monkeypatch.setattr(grading, "_default_grader", None)


# -- the record format -------------------------------------------------------------------


def test_a_later_record_of_a_problem_replaces_the_earlier_one(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    lines = [
        {"unique_id": "a", "error": "boom", "candidates": []},
        {"unique_id": "b", "error": None, "candidates": []},
        {"unique_id": "a", "error": None, "candidates": [{"answer": "7"}]},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    records = read_records(path)
    # One record per problem, the last one written, in the order they finished.
    assert [(r["unique_id"], r["error"]) for r in records] == [("b", None), ("a", None)]


# -- ungraded answers --------------------------------------------------------------------


async def test_a_grader_that_cannot_run_leaves_answers_ungraded_and_the_rerun_grades_them(
    tmp_path: Path, recipe_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe, out = load_recipe(recipe_file), tmp_path / "exp"
    _break_the_grader(monkeypatch)
    with pytest.raises(GradingError, match=r"4 answers could not be graded .*rerun the same command"):
        await run_experiment(recipe, out, progress=False, backends=backends(), report=False)
    for run in _records(out).values():
        assert len(run) == 3
        for uid in ("square", "square-minus"):  # needed a worker: ungraded, not wrong
            assert run[uid]["correct"] is None and "did not start" in run[uid]["grade_error"]
        assert run["four"]["correct"] is True and "grade_error" not in run["four"]  # settled in-process
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["finished_at"] is None  # not finished while answers are ungraded

    monkeypatch.undo()  # the grader works again
    policy, verifier = backends()
    summary = await run_experiment(recipe, out, progress=False, backends=(policy, verifier), report=False)
    assert (summary.searched, summary.regraded) == (0, 4)
    assert policy.requests == []  # graded from the records: nothing searched again
    for path in (out / "runs").glob("*.jsonl"):
        run = {r["unique_id"]: r for r in read_records(path)}
        assert all(r["correct"] is True and "grade_error" not in r for r in run.values())
        assert len(path.read_text().splitlines()) == 3  # the ungraded records were replaced
    assert json.loads((out / "manifest.json").read_text())["finished_at"]


# -- --retry-failed ----------------------------------------------------------------------


async def test_retry_failed_reruns_exactly_the_failed_problems_and_replaces_their_records(
    tmp_path: Path, recipe_file: Path
) -> None:
    recipe, out = load_recipe(recipe_file), tmp_path / "exp"
    first = await run_experiment(
        recipe, out, progress=False, backends=backends(failing_script({"What is 2+2?"})), report=False
    )
    assert first.failed == 2  # "four" in each of the 2 runs
    before = {p.name: p.read_text().splitlines() for p in (out / "runs").glob("*.jsonl")}

    # A plain rerun treats a failed problem as done, and says how to retry it.
    policy, verifier = backends()
    plain = await run_experiment(recipe, out, progress=False, backends=(policy, verifier), report=False)
    assert (plain.searched, plain.failed_kept) == (0, 2) and policy.requests == []

    policy, verifier = backends()
    retry = await run_experiment(
        recipe, out, retry_failed=True, progress=False, backends=(policy, verifier), report=False
    )
    assert (retry.searched, retry.retried, retry.failed, retry.resumed) == (2, 2, 0, 4)
    assert {tuple(r.prompt_token_ids) for r in policy.requests} == {tuple(policy.encode_problem("What is 2+2?"))}
    for name, old_lines in before.items():
        run = _records(out)[name.removesuffix(".jsonl")]
        assert run["four"]["error"] is None and run["four"]["correct"] is True
        lines = (out / "runs" / name).read_text().splitlines()
        # The other records are kept byte for byte, in their order; the failed one is replaced.
        kept = [line for line in old_lines if json.loads(line)["unique_id"] != "four"]
        assert lines[: len(kept)] == kept and len(lines) == 3


_KILLED_RETRY = """
import asyncio, sys
from tests.experiment.test_grading_and_retry import algebra_script
from ttsearch.study import load_recipe, run_experiment
from ttsearch.testing.scripted import ScriptedPolicy, ScriptedVerifier, decode

async def delay(request):
    if "Expand (x-1)^2" in decode(request.prompt_token_ids):
        await asyncio.sleep(3600)  # this retry never finishes: the test kills the process

recipe = load_recipe(sys.argv[1], ["seeds=[0]"])
backends = (ScriptedPolicy(algebra_script, delay=delay), ScriptedVerifier())
asyncio.run(run_experiment(recipe, sys.argv[2], retry_failed=True, progress=False, backends=backends, report=False))
"""


async def test_a_kill_during_the_retry_loses_nothing(tmp_path: Path, recipe_file: Path) -> None:
    recipe, out = load_recipe(recipe_file, ["seeds=[0]"]), tmp_path / "exp"
    script = failing_script({"What is 2+2?", "Expand (x-1)^2"})
    await run_experiment(recipe, out, progress=False, backends=backends(script), report=False)
    (path,) = (out / "runs").glob("*.jsonl")
    failed_before = {r["unique_id"]: r for r in read_records(path)}
    assert sorted(uid for uid, r in failed_before.items() if r["error"]) == ["four", "square-minus"]

    # The retry of "four" finishes (its new record is appended); "square-minus" hangs: kill -9.
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    log = tmp_path / "killed.log"
    with log.open("w") as sink:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _KILLED_RETRY,
            str(recipe_file),
            str(out),
            cwd=REPO_ROOT,
            env=env,
            stdout=sink,
            stderr=sink,
        )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.returncode is None:
            if len(path.read_text().splitlines()) > 3:
                break
            await asyncio.sleep(0.1)
        assert proc.returncode is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "the retried record did not appear in time"
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
        await proc.wait()

    after = {r["unique_id"]: r for r in read_records(path)}
    assert sorted(after) == ["four", "square", "square-minus"]  # nothing lost
    assert after["four"]["error"] is None and after["four"]["correct"] is True  # the retry is kept
    assert after["square-minus"] == failed_before["square-minus"]  # still failed: retried next time
    assert after["square"] == failed_before["square"]

    summary = await run_experiment(recipe, out, retry_failed=True, progress=False, backends=backends(), report=False)
    assert (summary.searched, summary.retried, summary.failed) == (1, 1, 0)
    assert all(r["error"] is None for r in read_records(path)) and len(path.read_text().splitlines()) == 3


# -- the command line and the progress line ------------------------------------------------


def test_the_cli_flag_reaches_the_runner(
    tmp_path: Path, recipe_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ttsearch.cli import experiment as cli_experiment
    from ttsearch.cli.app import main

    with pytest.raises(SystemExit):
        main(["experiment", "--help"])
    assert "--retry-failed" in capsys.readouterr().out
    assert build_parser().parse_args(["experiment", str(recipe_file)]).retry_failed is False

    seen: dict[str, Any] = {}

    async def fake_run_experiment(*args: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        raise GradingError("2 answers could not be graded")

    monkeypatch.setattr(cli_experiment, "run_experiment", fake_run_experiment)
    assert main(["experiment", str(recipe_file), "--out", str(tmp_path / "x"), "--retry-failed", "--quiet"]) == 1
    assert seen["retry_failed"] is True
    assert "error: 2 answers could not be graded" in capsys.readouterr().err  # exit status 1, no traceback
    monkeypatch.undo()  # the real runner refuses the two flags together, before anything starts
    code = main(["experiment", str(recipe_file), "--out", str(tmp_path / "x"), "--retry-failed", "--restart"])
    assert code == 2 and "--retry-failed" in capsys.readouterr().err


def test_the_progress_line_says_how_many_failed_problems_are_retried(capsys: pytest.CaptureFixture[str]) -> None:
    bar = ExperimentProgress(total=10, done=7, runs=2, runs_done=1, retried=3, enabled=True)
    bar.close()
    assert "3 failed retried" in capsys.readouterr().err
