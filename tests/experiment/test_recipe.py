"""Recipes: parsing, round trip, overrides, the plan, and every bad-input message (all
reported before any engine starts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.experiment.helpers import recipe_data, write_dataset, write_recipe
from ttsearch.cli.app import main
from ttsearch.cli.experiment import TOY_RECIPE
from ttsearch.errors import RecipeError
from ttsearch.study import load_recipe, parse_recipe, plan_runs, prepare
from ttsearch.study.recipe import changed_fields


@pytest.fixture
def recipe_file(tmp_path: Path, llama3_tokenizer_dir: Path) -> Path:
    dataset = write_dataset(tmp_path / "problems.jsonl")
    return write_recipe(tmp_path / "r.yaml", recipe_data(dataset, llama3_tokenizer_dir))


def test_round_trip_keeps_every_field_and_the_hash(recipe_file: Path) -> None:
    recipe = load_recipe(recipe_file)
    again = parse_recipe(json.loads(json.dumps(recipe.to_dict())), base_dir=recipe.base_dir)
    assert again.to_dict() == recipe.to_dict()
    assert again.hash == recipe.hash
    assert recipe.name == "scripted" and recipe.seeds == (0, 1)
    assert recipe.strategies[2].options == {"width": 2}


def test_shipped_recipes_are_valid() -> None:
    for path in sorted(TOY_RECIPE.parent.glob("*.yaml")):
        recipe = load_recipe(path)
        assert plan_runs(recipe), path
    toy = prepare(load_recipe(TOY_RECIPE))
    assert len(toy.problems) == 100
    assert {r.label for r in toy.runs} == {"majority", "best_of_n", "beam", "dvts", "lookahead"}


def test_blog_recipe_is_the_blogs_setup() -> None:
    recipe = load_recipe(TOY_RECIPE.parent / "blog-llama-1b.yaml")
    assert recipe.policy.model == "meta-llama/Llama-3.2-1B-Instruct"
    assert recipe.prm is not None and recipe.prm.model == "RLHFlow/Llama3.1-8B-PRM-Deepseek-Data"
    assert recipe.sampling.temperature == 0.8 and recipe.seeds == (0, 1, 2, 3, 4)
    entries = {e.label: e for e in recipe.strategies}
    assert set(entries) == {"majority", "best_of_n", "beam", "dvts", "lookahead"}
    assert entries["beam"].n == (4, 16, 64, 256) and entries["beam"].options["width"] == 4
    assert entries["best_of_n"].n == (1, 4, 16, 64, 256)
    assert entries["lookahead"].options["lookahead"] == 2


def test_plan_reads_sampling_runs_at_every_budget_and_runs_stepwise_per_n(recipe_file: Path) -> None:
    runs = plan_runs(load_recipe(recipe_file))
    by_id = {r.run_id: r for r in runs}
    assert sorted(by_id) == sorted(
        [
            "majority-n4-s0",
            "majority-n4-s1",
            "best_of_n-n4-s0",
            "best_of_n-n4-s1",
            "beam-n2-s0",
            "beam-n2-s1",
            "beam-n4-s0",
            "beam-n4-s1",
        ]
    )
    assert by_id["majority-n4-s0"].budgets == (1, 2, 4) and by_id["majority-n4-s0"].kind == "sampling"
    assert by_id["beam-n2-s1"].budgets == (2,) and by_id["beam-n2-s1"].strategy.width == 2
    # the recipe's sampling temperature is every entry's default
    assert all(r.strategy.temperature == 0.8 for r in runs)


def test_overrides_and_per_n(recipe_file: Path) -> None:
    recipe = load_recipe(
        recipe_file,
        ["sampling.temperature=1.0", "strategies.beam.width=1", "seeds=[3]", "strategies.beam.per_n={4: {width: 4}}"],
    )
    runs = {r.run_id: r for r in plan_runs(recipe)}
    assert runs["beam-n2-s3"].strategy.width == 1 and runs["beam-n4-s3"].strategy.width == 4
    assert runs["majority-n4-s3"].strategy.temperature == 1.0


def test_changed_fields_name_what_differs(recipe_file: Path) -> None:
    a = load_recipe(recipe_file)
    b = load_recipe(recipe_file, ["strategies.beam.width=1", "dataset.end=3"])
    assert changed_fields(a.results_dict(), b.results_dict()) == ["dataset.end", "strategies.beam.width"]
    assert a.hash != b.hash
    c = load_recipe(recipe_file, ["execution.max_concurrent_problems=3"])
    assert c.hash == a.hash  # how a run executes never changes its results


BAD = [
    ({"colour": "red"}, r"r.yaml: unknown field\(s\) \['colour'\]; allowed: \['name', 'policy', 'prm'"),
    ({"policy": {"model": "x/y", "gpu": 1}}, r"policy: unknown field\(s\) \['gpu'\]; allowed: \['model', 'url'"),
    ({"sampling": {"temperature": "hot"}}, r"sampling.temperature: expected a number, got 'hot'"),
    ({"strategies": [{"strategy": "beem", "n": [4]}]}, r"unknown strategy 'beem'; choose from \['adaptive_best_of_n'"),
    (
        {"strategies": [{"strategy": "beam", "n": [6], "width": 4}]},
        r"'beam' \(beam\) at n=6: .*width must be >= 1 and divide n",
    ),
    (
        {"strategies": [{"strategy": "beam", "n": [4], "widht": 4}]},
        r"\(beam\): unknown field\(s\) \['widht'\]; allowed: \['label'",
    ),
    ({"strategies": [{"strategy": "beam", "width": 4}]}, r"\(beam\): missing field 'n'"),
    (
        {"strategies": [{"strategy": "beam", "n": [4]}, {"strategy": "beam", "n": [8]}]},
        r"labels must be unique; repeated: \['beam'\]",
    ),
    ({"strategies": []}, r"strategies is empty"),
    ({"seeds": [0, 0]}, r"seeds must be distinct non-negative ints"),
    ({"policy": {"model": "/nonexistent/model"}}, r"policy.model: no such model directory: /nonexistent/model"),
    ({"prm": {"model": "/nonexistent/prm"}}, r"prm.model: no such model directory: /nonexistent/prm"),
    (
        {"policy": {"model": "x/y", "tokenizer": "./no-tokenizer"}},
        r"policy.tokenizer: no such tokenizer directory: .*no-tokenizer",
    ),
    ({"prm": {"model": "x/y", "format": "shepherd"}}, r"prm.format 'shepherd' is not a preset; choose from"),
    ({"policy": {"kv_cache": "lots", "model": "x/y"}}, r"policy.kv_cache: not a size: 'lots'"),
    ({"prm": None}, r"'best_of_n' \(best_of_n\) needs a PRM: add a prm: section"),
    ({"dataset": {"source": "missing.jsonl"}}, r"dataset: dataset file not found: .*missing.jsonl"),
]


@pytest.mark.parametrize("change, message", BAD, ids=[m[:40] for _, m in BAD])
def test_bad_recipe_names_the_problem(tmp_path: Path, llama3_tokenizer_dir: Path, change: dict, message: str) -> None:
    data = recipe_data(write_dataset(tmp_path / "problems.jsonl"), llama3_tokenizer_dir, **change)
    path = write_recipe(tmp_path / "r.yaml", data)
    with pytest.raises(RecipeError, match=message):
        prepare(load_recipe(path))


def test_prm_labels_and_tags_must_be_single_tokens(tmp_path: Path, llama3_tokenizer_dir: Path) -> None:
    dataset = write_dataset(tmp_path / "problems.jsonl")
    for fmt, message in [
        (
            {"base": "rlhflow", "label_tokens": ["+", "definitely wrong"]},
            r"label token 'definitely wrong' is not a single token",
        ),
        ({"base": "math_shepherd", "step_tag": " <step tag>"}, r"step_tag ' <step tag>' is not a single token"),
        ({"base": "rlhflow", "colour": 1}, r"prm.format: unknown field\(s\) \['colour'\]"),
    ]:
        data = recipe_data(dataset, llama3_tokenizer_dir)
        data["prm"]["format"] = fmt
        with pytest.raises(RecipeError, match=message):
            prepare(load_recipe(write_recipe(tmp_path / "r.yaml", data)))


def test_unreadable_dataset_names_file_line_and_field(tmp_path: Path, llama3_tokenizer_dir: Path) -> None:
    dataset = tmp_path / "problems.jsonl"
    dataset.write_text('{"problem": "1+1?", "answer": "2", "unique_id": "a"}\n{"problem": "2+2?"}\n')
    path = write_recipe(tmp_path / "r.yaml", recipe_data(dataset, llama3_tokenizer_dir))
    with pytest.raises(RecipeError, match=r"problems.jsonl, line 2: missing required field 'answer'"):
        prepare(load_recipe(path))


def test_malformed_dataset_line_names_file_and_line(tmp_path: Path, llama3_tokenizer_dir: Path) -> None:
    dataset = tmp_path / "problems.jsonl"
    dataset.write_text('{"problem": "1+1?", "answer": "2", "unique_id": "a"}\n{"problem": "2+2?", "answer": \n')
    path = write_recipe(tmp_path / "r.yaml", recipe_data(dataset, llama3_tokenizer_dir))
    with pytest.raises(RecipeError, match=r"problems.jsonl, line 2: malformed JSON"):
        prepare(load_recipe(path))


def test_relative_tokenizer_paths_are_relative_to_the_recipe(tmp_path: Path, llama3_tokenizer_dir: Path) -> None:
    import os

    recipe_dir = tmp_path / "recipes"
    recipe_dir.mkdir()
    relative = os.path.relpath(llama3_tokenizer_dir, recipe_dir)
    data = recipe_data(write_dataset(tmp_path / "p.jsonl"), llama3_tokenizer_dir)
    data["policy"]["tokenizer"] = relative
    data["prm"]["tokenizer"] = relative
    prepared = prepare(load_recipe(write_recipe(recipe_dir / "r.yaml", data)))
    # what the engines are given (experiment.engines), wherever the command runs from
    assert Path(prepared.policy_tokenizer).resolve() == llama3_tokenizer_dir.resolve()
    assert Path(prepared.prm_tokenizer).resolve() == llama3_tokenizer_dir.resolve()


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "none.yaml")
    (tmp_path / "bad.yaml").write_text("policy: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(tmp_path / "bad.yaml")
    with pytest.raises(RecipeError, match=r"override 'sampling': expected key=value"):
        load_recipe(TOY_RECIPE, ["sampling"])


def test_cli_reports_recipe_errors_without_a_traceback(tmp_path: Path, llama3_tokenizer_dir: Path, capsys) -> None:
    data = recipe_data(write_dataset(tmp_path / "p.jsonl"), llama3_tokenizer_dir, policy={"model": "/nonexistent"})
    path = write_recipe(tmp_path / "r.yaml", data)
    assert main(["experiment", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "ttsearch experiment: error: policy.model: no such model directory: /nonexistent" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_cli_check_prints_the_plan(recipe_file: Path, capsys) -> None:
    assert main(["experiment", str(recipe_file), "--check", "--seeds", "0"]) == 0
    out = capsys.readouterr().out
    assert (
        "is valid" in out
        and "4 runs x 6 problems" in out
        and "majority-n4-s0: majority n=4 seed=0 (read at N = 1, 2, 4)" in out
    )


def test_cli_run_with_a_missing_model_path_is_a_clear_error(tmp_path: Path, capsys) -> None:
    code = main(
        [
            "run",
            "--policy",
            "/nonexistent",
            "--strategy",
            "majority",
            "--n",
            "2",
            "--dataset",
            str(write_dataset(tmp_path / "p.jsonl")),
            "--out",
            str(tmp_path / "run"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "no such model directory: /nonexistent" in err and "Traceback" not in err


def test_recipe_with_server_urls_connects_to_them(tmp_path: Path, llama3_tokenizer_dir: Path, capsys) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    data = recipe_data(
        write_dataset(tmp_path / "p.jsonl"),
        llama3_tokenizer_dir,
        policy={"url": url},
        strategies=[{"strategy": "majority", "n": [2]}],
        execution={"request_timeout": 5},
    )
    path = write_recipe(tmp_path / "r.yaml", data)
    assert main(["experiment", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "no policy server answers" in err and url in err
    with pytest.raises(RecipeError, match=r"policy.url 'gpu1:8000' is not an http\(s\) URL"):
        load_recipe(write_recipe(tmp_path / "r2.yaml", dict(data, policy={"url": ["gpu1:8000"]})))
