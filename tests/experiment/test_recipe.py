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
from ttsearch.study.recipe import DatasetSpec, ExecutionSpec, PolicySpec, SamplingSpec, changed_fields


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


# -- the schema (pydantic models): hashes unchanged, messages that name file, field and what is allowed

# Computed before recipe parsing moved to pydantic (issue 17): a parser change must not change
# any recipe's hash (runs/ of an experiment are keyed by it). A recipe edit changes its own.
RECIPE_HASHES = {
    "blog-llama-1b.yaml": "6b3ac31a79771056",
    "blog-llama-3b.yaml": "b0a8ad9673c84061",
    "toy-optimal-online.yaml": "63c4bd5c853c73aa",
    "toy-optimal.yaml": "90add49ef816e6dd",
    "toy-quick.yaml": "102e57a2c5235eec",
    "toy.yaml": "38674fbf6daca682",
}
EVERY_FIELD = {  # every field set, ints where floats go, a size string, one url as a string
    "name": "every-field",
    "policy": {
        "url": "http://gpu1:8000",
        "tokenizer": "tok",
        "dtype": "bfloat16",
        "max_model_len": 2048,
        "kv_cache": "1.5GiB",
        "memory_fraction": 1,
        "tensor_parallel_size": 2,
        "enforce_eager": True,
        "engine_options": {"swap_space": 4},
        "chat_format": "tokenizer",
        "date_string": None,
    },
    "prm": {
        "model": "a/b",
        "format": {"base": "rlhflow", "label_tokens": ["+", "-"]},
        "mode": "pooling",
        "kv_cache": 1048576,
        "data_parallel_size": 2,
    },
    "dataset": {"source": "toy", "start": 3, "end": 9, "sample": 4, "sample_seed": 7, "toy_seed": 11},
    "sampling": {"temperature": 1, "top_p": 0.95, "max_tokens": 300, "max_step_tokens": 64, "system_prompt": "Hi."},
    "strategies": [
        {"strategy": "beam", "label": "beam-w2", "n": [16, 4], "width": 2, "per_n": {"4": {"width": 1}}},
        {"strategy": "majority", "n": 8},
    ],
    "seeds": 3,
    "execution": {"max_concurrent_problems": 2, "fsync_seconds": 1, "kv_admission": True},
}


def test_recipe_hashes_are_unchanged() -> None:
    assert {p.name for p in TOY_RECIPE.parent.glob("*.yaml")} >= set(RECIPE_HASHES)
    assert {name: load_recipe(TOY_RECIPE.parent / name).hash for name in RECIPE_HASHES} == RECIPE_HASHES
    recipe = parse_recipe(EVERY_FIELD)
    assert recipe.hash == "7f706fd23a296885"
    assert recipe.policy.url == ("http://gpu1:8000",) and recipe.policy.kv_cache == 3 << 29
    assert isinstance(recipe.policy.memory_fraction, float) and isinstance(recipe.sampling.temperature, float)
    assert (
        recipe.seeds == (3,) and recipe.strategies[0].n == (4, 16) and recipe.strategies[0].per_n == {4: {"width": 1}}
    )


def test_fields_left_out_take_the_dataclass_defaults() -> None:
    recipe = parse_recipe({"policy": {"model": "x/y"}, "strategies": [{"strategy": "majority", "n": 1}]})
    assert recipe.policy == PolicySpec(model="x/y") and recipe.prm is None
    assert (recipe.dataset, recipe.sampling, recipe.execution) == (DatasetSpec(), SamplingSpec(), ExecutionSpec())
    assert recipe.name == "experiment" and recipe.seeds == (0,)


SCHEMA_BAD = [
    ({"policy": {"model": "x/y", "max_model_len": True}}, r"^r.yaml: policy.max_model_len: expected an int, got True$"),
    ({"policy": {"model": "x/y", "max_model_len": 8}}, r"^r.yaml: policy.max_model_len must be >= 16, got 8$"),
    ({"prm": {"model": "x/y", "memory_fraction": 1.5}}, r"^r.yaml: prm.memory_fraction must be in \(0, 1\], got 1.5$"),
    ({"policy": {"model": "x/y", "kv_cache": 0}}, r"^r.yaml: policy.kv_cache must be > 0, got 0$"),
    (
        {"policy": {"model": "x/y", "chat_format": "chatml"}},
        r"^r.yaml: policy.chat_format must be one of \['auto', 'tokenizer'\], got 'chatml'$",
    ),
    ({"prm": {"model": "x/y", "mode": "x"}}, r"prm.mode must be one of \['auto', 'generative', 'pooling'\], got 'x'$"),
    ({"policy": {"url": ["http://a:1", 3]}}, r"^r.yaml: policy.url\[1\]: expected a string, got 3$"),
    ({"policy": {"url": 3}}, r"^r.yaml: policy.url: expected a list or a string, got 3$"),
    ({"prm": {"model": "x/y", "format": 5}}, r"^r.yaml: prm.format: expected a string or a mapping, got 5$"),
    ({"policy": {"model": "x/y", "engine_options": {1: 2}}}, r"^r.yaml: policy.engine_options: keys must be strings"),
    ({"sampling": {"temperature": None}}, r"^r.yaml: sampling.temperature: must not be null$"),
    ({"sampling": {"top_p": 0}}, r"^r.yaml: sampling.top_p must be in \(0, 1\], got 0$"),
    ({"dataset": {"sample": 0}}, r"^r.yaml: dataset.sample must be >= 1, got 0$"),
    ({"dataset": {"source": "x.jsonl", "start": 4, "end": 2}}, r"dataset needs 0 <= start < end, got start=4, end=2$"),
    ({"execution": {"max_policy_requests": 0}}, r"^r.yaml: execution.max_policy_requests must be >= 1, got 0$"),
    ({"execution": {"kv_admission": "yes"}}, r"^r.yaml: execution.kv_admission: expected true/false, got 'yes'$"),
    ({"dataset": 3}, r"^r.yaml: dataset: expected a mapping, got 3$"),
    ({"policy": None}, r"^r.yaml: missing required field 'policy'$"),
    ({"seeds": "x"}, r"^r.yaml: seeds: expected a list or an int, got 'x'$"),
    ({"seeds": [0, True]}, r"^r.yaml: seeds\[1\]: expected an int, got True$"),
    ({"name": 3}, r"^r.yaml: name: expected a string, got 3$"),
    (
        {"sampling": {"temprature": 1.0, "max_tokens": "many"}},
        r"^r.yaml: sampling: unknown field\(s\) \['temprature'\]; allowed: \['temperature', 'top_p', 'max_tokens', ",
    ),
    ({"policy": {"tokenizer": "t"}}, r"^r.yaml: policy: give model \(a path or Hugging Face id\) or url"),
]


@pytest.mark.parametrize("change, message", SCHEMA_BAD, ids=[m[:40] for _, m in SCHEMA_BAD])
def test_schema_errors_name_the_file_the_field_and_what_is_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: dict, message: str
) -> None:
    monkeypatch.chdir(tmp_path)  # the message names the file as given: r.yaml
    write_recipe(tmp_path / "r.yaml", recipe_data(tmp_path / "problems.jsonl", tmp_path, **change))
    with pytest.raises(RecipeError, match=message):
        load_recipe("r.yaml")


def test_schema_errors_name_where_the_recipe_came_from() -> None:
    data = {"policy": {"model": "x/y", "gpus": 2}, "strategies": [{"strategy": "majority", "n": 1}]}
    with pytest.raises(RecipeError, match=r"^ttsearch run: policy: unknown field\(s\) \['gpus'\]; allowed: \['model'"):
        parse_recipe(data, where="ttsearch run")
    with pytest.raises(RecipeError, match=r"^recipe: expected a mapping, got list$"):
        parse_recipe([1, 2])  # type: ignore[arg-type]


# -- revisions: the policy's tokenizer must render revision prompts, checked before any engine

ALTERNATING = (  # a template that refuses two assistant turns in a row, as Mistral's and Gemma's do
    "{{ bos_token }}{% for m in messages %}{% if loop.index0 > 0 and m['role'] == messages[loop.index0 - 1]['role'] %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
)


def _revising_recipe(tmp_path: Path, **sampling: object) -> Path:
    from ttsearch.toy.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    tokenizer.chat_template = ALTERNATING
    tokenizer.save_pretrained(tmp_path / "alternating")
    data = {
        "policy": {"model": "toy", "tokenizer": "alternating", "chat_format": "tokenizer"},
        "prm": {"model": "toy", "format": "toy"},
        "dataset": {"source": "toy", "end": 2},
        "sampling": {"system_prompt": None, **sampling},
        "strategies": [{"strategy": "revisions", "n": [4], "chain_length": 2}],
    }
    return write_recipe(tmp_path / "r.yaml", data)


def test_a_revision_format_the_tokenizer_cannot_render_is_refused_before_any_engine(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"cannot render its prompts .*roles must alternate.*revision_instruction"):
        prepare(load_recipe(_revising_recipe(tmp_path)))
    # With an instruction turn after each attempt the roles alternate: the recipe is fine.
    prepared = prepare(load_recipe(_revising_recipe(tmp_path, revision_instruction="default")))
    assert [run.label for run in prepared.runs] == ["revisions"]
    with pytest.raises(RecipeError, match="revision_instruction is empty"):
        prepare(load_recipe(_revising_recipe(tmp_path, revision_instruction=" ")))


def test_revision_instruction_default_is_the_shipped_text_and_hashed_only_when_set(tmp_path: Path) -> None:
    from ttsearch.prompts import REVISION_INSTRUCTION
    from ttsearch.study.preflight import policy_prompt_options

    plain = load_recipe(_revising_recipe(tmp_path))
    instructed = load_recipe(_revising_recipe(tmp_path, revision_instruction="default"))
    assert policy_prompt_options(instructed)["revision_instruction"] == REVISION_INSTRUCTION
    assert policy_prompt_options(plain)["revision_instruction"] is None
    assert "revision_instruction" not in plain.to_dict()["sampling"] and plain.hash != instructed.hash
