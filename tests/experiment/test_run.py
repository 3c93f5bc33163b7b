"""The experiment runner on scripted backends: results, manifest, resume, refusal of a
changed recipe, --restart, torn lines, and the report over what it wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.experiment.helpers import recipe_data, script, scripted_backends, write_dataset, write_recipe
from ttsearch.errors import RecipeError
from ttsearch.records import read_records
from ttsearch.study import load_recipe, run_experiment
from ttsearch.study.report import build_report, load_experiment
from ttsearch.testing.scripted import ScriptedPolicy, ScriptedVerifier


@pytest.fixture
def recipe_file(tmp_path: Path, llama3_tokenizer_dir: Path) -> Path:
    dataset = write_dataset(tmp_path / "problems.jsonl")
    return write_recipe(tmp_path / "r.yaml", recipe_data(dataset, llama3_tokenizer_dir))


async def test_every_run_writes_one_record_per_problem(tmp_path: Path, recipe_file: Path) -> None:
    out = tmp_path / "exp"
    policy, verifier = scripted_backends()
    summary = await run_experiment(load_recipe(recipe_file), out, progress=False, backends=(policy, verifier))
    assert (summary.runs, summary.problems, summary.searched, summary.resumed, summary.failed) == (8, 6, 48, 0, 0)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["recipe_hash"] == load_recipe(recipe_file).hash and manifest["finished_at"]
    assert {r["run_id"] for r in manifest["runs"]} == {p.stem for p in (out / "runs").glob("*.jsonl")}
    assert manifest["machine"]["cpus"] and "vllm_version" in manifest
    for run in manifest["runs"]:
        records = read_records(out / "runs" / f"{run['run_id']}.jsonl")
        assert sorted(r["unique_id"] for r in records) == [f"p{i}" for i in range(6)]
        assert all(r["run_id"] == run["run_id"] and r["seed"] == run["seed"] and r["n"] == run["n"] for r in records)
        assert all(len(r["candidates"]) == run["n"] for r in records)
    # one searcher for all runs: the scripted backends were left open (the caller's)
    assert not verifier.closed
    # majority never calls the PRM; seeds differ in their request seeds
    seeds = {r.seed for r in policy.requests}
    assert len(seeds) > 6

    report = build_report(load_experiment(out))
    bon = report.strategy("best_of_n")
    assert bon.ks == (1, 2, 4) and bon.seeds == (0, 1)
    # Odd problems: sample 0 right, the rest wrong (the script); even problems: all right.
    assert bon.accuracy(4, "naive") == pytest.approx(1.0)  # the right one scores 0.9, the others 0.4
    assert bon.accuracy(4, "weighted") == pytest.approx(0.5)  # odd problems: 3 x 0.4 beats 0.9
    assert bon.accuracy(1, "majority") == pytest.approx((3 + 3 * 0.25) / 6)
    assert report.strategy("beam").ks == (2, 4)
    assert summary.report_html is not None and summary.report_html.is_file()


async def test_rerun_resumes_and_never_redoes_a_finished_problem(tmp_path: Path, recipe_file: Path) -> None:
    out = tmp_path / "exp"
    small = load_recipe(recipe_file, ["dataset.end=6"])
    await run_experiment(small, out, progress=False, backends=scripted_backends(), report=False)
    # Lose two problems of one run, and tear the last line of another (a kill mid-write).
    beam = out / "runs" / "beam-n4-s0.jsonl"
    lines = beam.read_text().splitlines(keepends=True)
    beam.write_text("".join(lines[:4]))
    bon = out / "runs" / "best_of_n-n4-s1.jsonl"
    kept = bon.read_text().splitlines(keepends=True)[:5]
    bon.write_text("".join(kept) + '{"unique_id": "p9", "cand')
    before = {p.name: p.read_text() for p in (out / "runs").glob("*.jsonl")}

    policy, verifier = scripted_backends()
    with pytest.warns(UserWarning, match="dropping a torn last line"):
        summary = await run_experiment(small, out, progress=False, backends=(policy, verifier), report=False)
    assert summary.searched == 3 and summary.resumed == 45
    for path in (out / "runs").glob("*.jsonl"):
        records = read_records(path)
        assert sorted(r["unique_id"] for r in records) == [f"p{i}" for i in range(6)], path.name
        old = before[path.name].split('{"unique_id": "p9"')[0]
        assert path.read_text().startswith(old)  # earlier records are never rewritten
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["sessions"]) == 2 and manifest["sessions"][1]["searched"] == 3

    # Everything done: a third run starts nothing.
    summary = await run_experiment(small, out, progress=False, backends=scripted_backends(), report=False)
    assert summary.searched == 0 and summary.resumed == 48


async def test_a_changed_recipe_is_refused_unless_restart(tmp_path: Path, recipe_file: Path) -> None:
    out = tmp_path / "exp"
    await run_experiment(load_recipe(recipe_file), out, progress=False, backends=scripted_backends(), report=False)
    changed = load_recipe(recipe_file, ["strategies.beam.width=1", "sampling.temperature=1.0"])
    with pytest.raises(RecipeError, match=r"changed: sampling.temperature, strategies.beam.width\. Use another --out"):
        await run_experiment(changed, out, progress=False, backends=scripted_backends())
    # an execution setting is not a change of recipe
    await run_experiment(
        load_recipe(recipe_file, ["execution.max_concurrent_problems=2"]),
        out,
        progress=False,
        backends=scripted_backends(),
        report=False,
    )
    summary = await run_experiment(
        changed, out, restart=True, progress=False, backends=scripted_backends(), report=False
    )
    assert summary.searched == 48
    aside = [p for p in out.iterdir() if p.name.startswith("previous-")]
    assert len(aside) == 1 and len(list((aside[0] / "runs").glob("*.jsonl"))) == 8  # moved, not deleted
    assert json.loads((out / "manifest.json").read_text())["recipe_hash"] == changed.hash


async def test_shards_split_the_problems_and_merge_in_the_report(tmp_path: Path, recipe_file: Path) -> None:
    recipe = load_recipe(recipe_file, ["seeds=[0]"])
    for i in range(2):
        s = await run_experiment(
            recipe, tmp_path / f"s{i}", shard=(i, 2), progress=False, backends=scripted_backends(), report=False
        )
        assert s.problems == 3
    merged = load_experiment([tmp_path / "s0", tmp_path / "s1"])
    assert all(len(run.records) == 6 for run in merged.runs)
    with pytest.raises(RecipeError, match=r"shard \(0/2 -> 1/2\)"):
        await run_experiment(recipe, tmp_path / "s0", shard=(1, 2), progress=False, backends=scripted_backends())


async def test_results_without_a_manifest_are_not_overwritten(tmp_path: Path, recipe_file: Path) -> None:
    out = tmp_path / "exp"
    (out / "runs").mkdir(parents=True)
    (out / "runs" / "x.jsonl").write_text('{"unique_id": "a"}\n')
    with pytest.raises(RecipeError, match="has results under runs/ but no manifest.json"):
        await run_experiment(load_recipe(recipe_file), out, progress=False, backends=scripted_backends())


def test_engine_output_goes_to_the_log_and_our_own_prints_to_the_terminal(tmp_path: Path) -> None:
    """What hides vLLM's lines unless --verbose: engine processes inherit fds 1 and 2 (the
    log), while this process's prints and progress display still reach the terminal."""
    import subprocess
    import sys

    log = tmp_path / "logs" / "engines.log"
    code = f"""
import subprocess, sys
from pathlib import Path
from ttsearch.study.engines import engine_output_to
with engine_output_to(Path({str(log)!r})):
    subprocess.run([sys.executable, "-c", "import sys; print('ENGINE OUT'); print('ENGINE ERR', file=sys.stderr)"])
    print("OUR LINE")
    print("OUR WARNING", file=sys.stderr)
print("AFTER")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["OUR", "LINE", "AFTER"] and done.stderr.strip() == "OUR WARNING"
    assert log.read_text().split("\n")[:2] == ["ENGINE OUT", "ENGINE ERR"]


class ForgettingVerifier(ScriptedVerifier):
    """A scripted PRM with caches to forget: records when it was told to, and which run's
    problems it had scored before (by the problem texts' order of arrival)."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []

    async def score(self, question: str, steps, *, first: int = 0):  # type: ignore[no-untyped-def]
        self.events.append("score")
        return await super().score(question, steps, first=first)

    async def forget_caches(self) -> None:
        self.events.append("forget")


@pytest.mark.parametrize("isolate", [True, False])
async def test_runs_are_searched_one_at_a_time_with_the_prm_caches_forgotten_between(
    tmp_path: Path, llama3_tokenizer_dir: Path, isolate: bool
) -> None:
    # Each run's PRM computed tokens must be its own (issue 20): a memo or prefix cache
    # filled by an earlier run would make a later run look cheaper than it is.
    dataset = write_dataset(tmp_path / "problems.jsonl")
    data = recipe_data(
        dataset, llama3_tokenizer_dir, execution={"isolate_runs": isolate, "max_concurrent_problems": 64}
    )
    data["strategies"] = [{"strategy": "best_of_n", "n": [4]}, {"strategy": "beam", "n": [4], "width": 2}]
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", data))
    verifier = ForgettingVerifier()
    out = tmp_path / "exp"
    await run_experiment(recipe, out, progress=False, backends=(ScriptedPolicy(script), verifier), report=False)
    runs = 4  # 2 entries x 2 seeds
    if isolate:
        assert verifier.events.count("forget") == runs - 1
        # nothing of a run is scored after the caches were forgotten for the next one
        chunks = "".join("F" if e == "forget" else "s" for e in verifier.events).split("F")
        assert len(chunks) == runs and all(chunks)
        assert sum(len(read_records(path)) for path in (out / "runs").glob("*.jsonl")) == runs * 6
    else:
        assert "forget" not in verifier.events


async def test_kept_trees_are_recorded_and_each_problem_links_to_its_tree_page(
    tmp_path: Path, recipe_file: Path
) -> None:
    out = tmp_path / "exp"
    recipe = load_recipe(recipe_file, ["dataset.end=3", "execution.keep_trees=true"])
    summary = await run_experiment(recipe, out, progress=False, backends=scripted_backends())
    runs = {p.stem: read_records(p) for p in (out / "runs").glob("*.jsonl")}
    trees = {p.stem: read_records(p) for p in (out / "trees").glob("*.jsonl")}
    assert trees.keys() == runs.keys()
    for run_id, lines in trees.items():
        records = {r["unique_id"]: r for r in runs[run_id]}
        assert [line["unique_id"] for line in lines] == [r["unique_id"] for r in runs[run_id]]
        for line in lines:
            nodes = {node["id"]: node for node in line["tree"]["nodes"]}
            record = records[line["unique_id"]]
            assert line["answer"] == record["answer"] and line["correct"] == record["correct"]
            # every candidate is a finished node of the tree, the selected one among them
            assert len(line["candidates"]) == len(record["candidates"])
            assert all(nodes[i]["state"] == "finished" for i in line["candidates"])
            assert line["selected"] in line["candidates"]
    assert summary.report_html is not None
    page = summary.report_html.read_text()
    assert "<h2>Search trees</h2>" in page
    report_dir = summary.report_html.parent
    hrefs = [h for h in page.split('href="')[1:]]
    linked = [report_dir / h.split('"')[0] for h in hrefs if h.startswith("trees/")]
    assert len(linked) == sum(len(lines) for lines in trees.values())
    assert all(path.is_file() and 'id="tree-data"' in path.read_text() for path in linked)


async def test_without_keep_trees_nothing_is_recorded_beyond_the_results(tmp_path: Path, recipe_file: Path) -> None:
    out = tmp_path / "exp"
    summary = await run_experiment(
        load_recipe(recipe_file, ["dataset.end=2"]), out, progress=False, backends=scripted_backends()
    )
    assert not (out / "trees").exists()
    assert summary.report_html is not None and "Search trees" not in summary.report_html.read_text()
