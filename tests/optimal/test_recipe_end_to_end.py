"""ComputeOptimal from a recipe, like any other strategy: fit a policy table on one
experiment (`ttsearch fit-policy`), then run a `compute_optimal` entry that names it by a
path relative to the recipe, and read its records back in the analysis."""

from __future__ import annotations

import json
from pathlib import Path

from tests.experiment.helpers import recipe_data, scripted_backends, write_dataset, write_recipe
from ttsearch.cli.app import main
from ttsearch.records import read_records
from ttsearch.study import load_recipe, run_experiment
from ttsearch.study.optimal.analysis import analyse_experiment, format_analysis
from ttsearch.study.optimal.policy_table import load_policy


async def test_a_recipe_runs_compute_optimal_with_a_fitted_policy(tmp_path: Path, llama3_tokenizer_dir: Path) -> None:
    dataset = write_dataset(tmp_path / "problems.jsonl")
    first = write_recipe(tmp_path / "fit.yaml", recipe_data(dataset, llama3_tokenizer_dir))
    await run_experiment(
        load_recipe(first), tmp_path / "fit", progress=False, backends=scripted_backends(), report=False
    )
    (tmp_path / "study").mkdir()
    policy = str(tmp_path / "study" / "policy.json")
    assert main(["fit-policy", str(tmp_path / "fit"), "-o", policy, "--probe", "1"]) == 0  # the probe the entry runs
    table = load_policy(tmp_path / "study" / "policy.json")

    data = recipe_data(dataset, llama3_tokenizer_dir)
    data["strategies"] = [
        {"strategy": "best_of_n", "n": [1, 2, 4]},
        {"label": "co", "strategy": "compute_optimal", "n": [4], "policy": "policy.json", "probe": 1},
    ]
    data["seeds"] = [0]
    recipe = load_recipe(write_recipe(tmp_path / "study" / "r.yaml", data))  # policy.json: beside the recipe
    out = tmp_path / "study" / "exp"
    policy, verifier = scripted_backends()
    summary = await run_experiment(recipe, out, progress=False, backends=(policy, verifier), report=False)
    assert summary.failed == 0
    records = read_records(out / "runs" / "co-n4-s0.jsonl")
    assert sorted(r["unique_id"] for r in records) == [f"p{i}" for i in range(6)]
    for record in records:
        assert record["error"] is None
        # The probe (1 sample) is paid from the budget: a sampling choice draws 3 more.
        if record["selection"] == "majority" or all(len(c["step_scores"]) <= 3 for c in record["candidates"]):
            assert record["usage"]["policy_samples"] <= 4 + 2 * 3  # beam: 2 beams x up to 3 steps after the probe
        assert record["usage"]["generated_tokens"] > 0 and record["usage"]["verifier_tokens"] > 0
    # Each problem ran an option the table ranks for some level at N=4.
    ranked = {(c.strategy, c.selection) for options in table.ranked[4].values() for c in options}
    assert all(r["selection"] in {s for _, s in ranked} for r in records)

    analysis = analyse_experiment([out])
    (curve,) = analysis.measured
    assert curve.option == "co" and [p.n for p in curve.points] == [4]
    assert "co (as run)" in format_analysis(analysis)
    # Records name the policy file; they do not copy the table into every line.
    assert {r["config"]["policy"] for r in records} == {str(tmp_path / "study" / "policy.json")}
    manifest = json.loads((out / "manifest.json").read_text())
    assert any(run["run_id"] == "co-n4-s0" for run in manifest["runs"])
