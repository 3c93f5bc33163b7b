"""`ttsearch run` is a one-entry experiment: its flags build a recipe, which then runs
exactly as `ttsearch experiment` would (preflight, engines, store, resume, report)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ttsearch.cli.app import build_parser, main
from ttsearch.cli.run import recipe_from_run_flags
from ttsearch.errors import RecipeError
from ttsearch.records import read_records


def _args(*flags: str):  # type: ignore[no-untyped-def]
    return build_parser().parse_args(["run", *flags])


def test_flags_build_a_one_entry_recipe(tmp_path: Path) -> None:
    args = _args(
        "--policy-url", "http://a:8000", "http://b:8000", "--prm", "some/prm", "--prm-format", "qwen",
        "--prm-mode", "pooling", "--strategy", "beam", "--n", "8", "--width", "2", "--temperature", "0.7",
        "--dataset", "problems.jsonl", "--limit", "5", "--seed", "3", "--max-solution-tokens", "512",
        "--prm-data-parallel-size", "2", "--request-timeout", "30", "--out", str(tmp_path / "beam8"),
    )  # fmt: skip
    recipe = recipe_from_run_flags(args)
    (entry,) = recipe.strategies
    assert (entry.strategy, entry.n, entry.options) == ("beam", (8,), {"width": 2, "temperature": 0.7})
    assert recipe.policy.url == ("http://a:8000", "http://b:8000") and recipe.policy.model is None
    assert recipe.prm is not None and (recipe.prm.model, recipe.prm.format, recipe.prm.mode) == (
        "some/prm",
        "qwen",
        "pooling",
    )
    assert recipe.prm.data_parallel_size == 2 and recipe.policy.data_parallel_size == 1
    assert (recipe.dataset.source, recipe.dataset.end, recipe.seeds) == ("problems.jsonl", 5, (3,))
    assert recipe.sampling.max_tokens == 512 and recipe.execution.request_timeout == 30
    # majority voting needs no PRM: the recipe has none, whatever --prm says
    assert recipe_from_run_flags(_args("--policy", "p", "--strategy", "majority", "--n", "4", "--out", "d")).prm is None


def test_any_strategy_option_goes_through_option_flags() -> None:
    args = _args(
        "--policy", "p", "--prm", "r", "--strategy", "rebase", "--n", "8", "--out", "d",
        "--option", "softmax_temperature=0.5", "--option", "max_depth=12",
    )  # fmt: skip
    (entry,) = recipe_from_run_flags(args).strategies
    assert entry.options == {"softmax_temperature": 0.5, "max_depth": 12}
    from ttsearch.study.plan import plan_runs

    (run,) = plan_runs(recipe_from_run_flags(args))
    assert run.strategy.options()["softmax_temperature"] == 0.5
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        recipe_from_run_flags(
            _args("--policy", "p", "--strategy", "majority", "--n", "2", "--out", "d", "--option", "x")
        )
    bad = _args("--policy", "p", "--prm", "r", "--strategy", "mcts", "--n", "8", "--out", "d", "--option", "nope=1")
    with pytest.raises(RecipeError, match=r"unknown field\(s\) \['nope'\]; allowed: .*'c_uct'") as error:
        recipe_from_run_flags(bad)
    assert "budget_kind" not in str(error.value)  # a class setting, not an option


def test_revision_flags_build_a_revisions_recipe() -> None:
    args = _args(
        "--policy", "p", "--prm", "r", "--strategy", "revisions", "--n", "8", "--out", "d",
        "--option", "chain_length=4", "--revision-instruction", "default",
    )  # fmt: skip
    recipe = recipe_from_run_flags(args)
    assert recipe.strategies[0].options == {"chain_length": 4} and recipe.sampling.revision_instruction == "default"
    plain = recipe_from_run_flags(
        _args("--policy", "p", "--prm", "r", "--strategy", "revisions", "--n", "4", "--out", "d")
    )
    assert plain.sampling.revision_instruction is None


def test_bad_flags_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="pass a directory"):
        recipe_from_run_flags(_args("--policy", "p", "--strategy", "majority", "--n", "2", "--out", "o.jsonl"))
    with pytest.raises(RecipeError, match="strategy entry 'dvts' .* width must be >= 1 and divide n"):
        recipe = recipe_from_run_flags(
            _args("--policy", "p", "--prm", "r", "--strategy", "dvts", "--n", "6", "--width", "4", "--out", "d")
        )
        from ttsearch.study.plan import plan_runs

        plan_runs(recipe)
    with pytest.raises(RecipeError, match="unknown field"):
        recipe_from_run_flags(
            _args("--policy", "p", "--strategy", "majority", "--n", "2", "--out", "d", "--set", "sampling.nope=1")
        )


@pytest.mark.slow
def test_run_on_the_toy_engines_writes_an_experiment_and_resumes(tmp_path: Path, capsys) -> None:
    # The toy world through `ttsearch run`: the toy models and format are named with
    # --set (the flags cover real models); a second call finds everything done.
    out = tmp_path / "beam4"
    flags = [
        "run", "--policy", "toy", "--prm", "toy", "--strategy", "beam", "--n", "4", "--width", "2",
        "--temperature", "1.0", "--reduction", "min", "--dataset", "toy", "--limit", "3",
        "--max-solution-tokens", "256", "--max-model-len", "512", "--dtype", "float32", "--enforce-eager",
        "--set", "prm.format=toy", "--set", "policy.chat_format=tokenizer", "--set", "policy.kv_cache=96MiB",
        "--set", "prm.kv_cache=64MiB", "--set", "sampling.system_prompt=Solve step by step.",
        "--quiet", "--out", str(out),
    ]  # fmt: skip
    assert main(flags) == 0
    records = read_records(out / "runs" / "beam-n4-s0.jsonl")
    assert len(records) == 3 and all(r["strategy"] == "beam" and r["n"] == 4 for r in records)
    assert all(r["kind"] == "stepwise" and r["record_version"] == 2 for r in records)
    assert (out / "manifest.json").is_file() and (out / "report" / "report.html").is_file()
    first = capsys.readouterr().out
    assert "3 searched" in first and "beam (weighted)" in first
    assert main(flags) == 0  # resumed: nothing left to search
    assert "0 searched" in capsys.readouterr().out and len(read_records(out / "runs" / "beam-n4-s0.jsonl")) == 3
