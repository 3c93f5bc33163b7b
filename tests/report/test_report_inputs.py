"""Experiment directories as input: shards, bad inputs, `ttsearch report` / `export` commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.report.test_report_numbers import RUNS, exact, write_experiment
from ttsearch.cli.app import main
from ttsearch.errors import ExperimentError
from ttsearch.study.report import build_report, export_traces, load_experiment
from ttsearch.study.report.render import report_to_dict

ALL = {s["run_id"]: list(problems) for s, problems, _, _ in RUNS}


def _numbers(dirs: list[Path]) -> dict:  # type: ignore[type-arg]
    d = report_to_dict(build_report(load_experiment(dirs), grader=exact))
    del d["dirs"]
    return d


def test_shards_merge_into_the_same_report(tmp_path: Path) -> None:
    whole = write_experiment(tmp_path / "whole")
    # Shard 0: p1-p3 of every run; shard 1: p4, p5 (and beam-n2 entirely in shard 1).
    first = {rid: [u for u in uids if u in ("p1", "p2", "p3")] for rid, uids in ALL.items() if rid != "beam-n2-s0"}
    second = {rid: [u for u in uids if u in ("p4", "p5")] for rid, uids in ALL.items()} | {
        "beam-n2-s0": ALL["beam-n2-s0"]
    }
    a = write_experiment(tmp_path / "a", only=first)
    b = write_experiment(tmp_path / "b", only=second)
    exp = load_experiment([a, b])
    assert exp.dirs == (a, b)
    assert {r.spec.run_id: len(r.records) for r in exp.runs} == {rid: len(uids) for rid, uids in ALL.items()}
    assert _numbers([a, b]) == _numbers([whole])


def test_a_problem_in_two_shards_is_an_error_naming_both(tmp_path: Path) -> None:
    a = write_experiment(tmp_path / "a", only={"bon-n4-s0": ["p1", "p2"]})
    b = write_experiment(tmp_path / "b", only={"bon-n4-s0": ["p2", "p3"]})
    with pytest.raises(ExperimentError, match=rf"problem 'p2' of run bon-n4-s0 is in both {a} and {b}"):
        load_experiment([a, b])


def test_shards_of_different_recipes_are_refused(tmp_path: Path) -> None:
    a = write_experiment(tmp_path / "a", recipe_hash="a" * 64)
    b = write_experiment(tmp_path / "b", recipe_hash="b" * 64)
    with pytest.raises(ExperimentError, match=rf"{b} and {a} are not shards of one experiment: recipe_hash 'bbbb"):
        load_experiment([a, b])


def test_bad_directories(tmp_path: Path) -> None:
    with pytest.raises(ExperimentError, match="no such experiment directory: .*missing"):
        load_experiment(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExperimentError, match="empty is not an experiment directory: it has no manifest.json"):
        load_experiment(tmp_path / "empty")
    norun = write_experiment(tmp_path / "norun", only={})
    with pytest.raises(ExperimentError, match="no finished problems in .*norun"):
        load_experiment(norun)
    bad = write_experiment(tmp_path / "bad")
    (bad / "manifest.json").write_text("{not json")
    with pytest.raises(ExperimentError, match="manifest.json: not valid JSON"):
        load_experiment(bad)
    with pytest.raises(ExperimentError, match="no experiment directory given"):
        load_experiment([])


def test_bad_records(tmp_path: Path) -> None:
    exp = write_experiment(tmp_path / "exp")
    path = exp / "runs" / "bon-n4-s0.jsonl"
    lines = path.read_text().splitlines()
    path.write_text(lines[0] + "\nnot json\n" + "\n".join(lines[1:]) + "\n")
    with pytest.raises(ExperimentError, match="bon-n4-s0.jsonl:2: not valid JSON"):
        load_experiment(exp)
    record = json.loads(lines[0])
    del record["gold"]
    path.write_text(json.dumps(record) + "\n")
    with pytest.raises(ExperimentError, match=r"bon-n4-s0.jsonl: problem 'p1' lacks field\(s\) \['gold'\]"):
        load_experiment(exp)


def test_a_torn_last_line_is_dropped_with_a_warning(tmp_path: Path) -> None:
    exp = write_experiment(tmp_path / "exp")
    path = exp / "runs" / "beam-n2-s0.jsonl"
    with path.open("a") as f:
        f.write('{"unique_id": "p6", "gold": "6", "candi')
    with pytest.warns(UserWarning, match="beam-n2-s0.jsonl:6: dropping a torn last line"):
        loaded = load_experiment(exp)
    assert len(next(r for r in loaded.runs if r.spec.run_id == "beam-n2-s0").records) == 5


def test_runs_without_manifest_specs_use_their_records(tmp_path: Path) -> None:
    # An older manifest without "runs": each run's spec comes from its records.
    exp = write_experiment(tmp_path / "exp")
    manifest = json.loads((exp / "manifest.json").read_text())
    del manifest["runs"]
    (exp / "manifest.json").write_text(json.dumps(manifest))

    def by_label(d: dict) -> dict:  # type: ignore[type-arg]
        return {s["label"]: s for s in d["strategies"]}

    # Without the manifest's order, strategies come in label order.
    assert [s["label"] for s in _numbers([exp])["strategies"]] == ["beam", "bon", "maj"]
    assert by_label(_numbers([exp])) == by_label(_numbers([write_experiment(tmp_path / "ref")]))


# ---------------------------------------------------------------- export


def _tiny(root: Path, candidates_a: list[dict], candidates_b: list[dict]) -> Path:  # type: ignore[type-arg]
    (root / "runs").mkdir(parents=True)
    for run_id, cands in (("bon-n3-s0", candidates_a), ("bon-n3-s1", candidates_b)):
        rec = {
            "unique_id": "q",
            "problem": "What is 2+2?",
            "gold": "4",
            "error": None,
            "candidates": cands,
            "run_id": run_id,
            "label": "bon",
            "strategy": "best_of_n",
            "kind": "sampling",
            "n": 3,
            "seed": int(run_id[-1]),
            "budgets": [1, 3],
        }
        failed = {**rec, "unique_id": "f", "error": "boom", "candidates": []}
        (root / "runs" / f"{run_id}.jsonl").write_text(json.dumps(rec) + "\n" + json.dumps(failed) + "\n")
    (root / "manifest.json").write_text(
        json.dumps({"recipe_hash": "x", "recipe": {"sampling": {"system_prompt": "Be brief."}}})
    )
    return root


def _c(text: str, answer: str | None, correct: bool | None = None) -> dict:  # type: ignore[type-arg]
    c = {"text": text, "answer": answer, "score": 0.5}
    if correct is not None:
        c["correct"] = correct
    return c


def test_export_deduplicates_and_filters_correct(tmp_path: Path) -> None:
    exp = load_experiment(
        _tiny(
            tmp_path / "exp",
            [_c("x: 4", "4", True), _c("y: 5", "5", False), _c("x: 4", "4", True)],
            # seed 1 has no "correct": graded. "  y: 5 \n" is y again once stripped.
            [_c("  y: 5 \n", "5"), _c("z: four", "4"), _c("   ", None)],
        )
    )
    out = tmp_path / "all.jsonl"
    summary = export_traces(exp, out, grader=exact)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["messages"][-1]["content"] for line in lines] == ["x: 4", "y: 5", "z: four"]
    assert (summary.written, summary.duplicates, summary.skipped, summary.incorrect) == (3, 2, 1, 0)
    assert lines[0]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "x: 4"},
    ]
    assert [line["correct"] for line in lines] == [True, False, True]
    assert lines[2]["run_id"] == "bon-n3-s1" and lines[2]["unique_id"] == "q"

    summary = export_traces(exp, tmp_path / "right.jsonl", correct_only=True, grader=exact)
    right = [json.loads(line) for line in (tmp_path / "right.jsonl").read_text().splitlines()]
    assert [line["messages"][-1]["content"] for line in right] == ["x: 4", "z: four"]
    assert (summary.written, summary.duplicates, summary.incorrect) == (2, 1, 2)


def test_export_system_turn_is_the_prompt_the_policy_was_given(tmp_path: Path) -> None:
    from ttsearch.prompts import LLAMA3_MATH_SYSTEM_PROMPT

    root = _tiny(tmp_path / "exp", [_c("x: 4", "4", True)], [_c("x: 4", "4", True)])
    manifest = root / "manifest.json"

    def first_messages(recipe: object) -> list[dict]:  # type: ignore[type-arg]
        manifest.write_text(json.dumps({"recipe_hash": "x", "recipe": recipe}))
        export_traces(load_experiment(root), tmp_path / "t.jsonl", grader=exact)
        return json.loads((tmp_path / "t.jsonl").read_text().splitlines()[0])["messages"]

    # A recipe's null system prompt is Meta's Llama 3 math prompt (the blog recipes' setting).
    assert first_messages({"sampling": {"system_prompt": None}})[0] == {
        "role": "system",
        "content": LLAMA3_MATH_SYSTEM_PROMPT,
    }
    assert first_messages({"sampling": {"system_prompt": "Solve step by step."}})[0]["content"] == "Solve step by step."
    assert [m["role"] for m in first_messages(None)] == ["user", "assistant"]  # no recipe: unknown


# ---------------------------------------------------------------- CLI


def test_cli_report_and_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Records with "correct" everywhere would avoid grading; the real grader on "1".."7" is fast.
    exp = write_experiment(tmp_path / "exp")
    assert main(["report", str(exp), "--out", str(tmp_path / "rep")]) == 0
    printed = capsys.readouterr().out
    assert "bon (best_of_n, sampling" in printed and "disjoint groups" in printed
    assert (tmp_path / "rep" / "report.html").exists() and (tmp_path / "rep" / "summary.json").exists()
    assert main(["report", str(exp)]) == 0  # default: DIR/report
    assert (exp / "report" / "report.html").exists()
    capsys.readouterr()
    assert main(["export", str(exp), "--correct-only", "-o", str(tmp_path / "t.jsonl")]) == 0
    assert "traces written" in capsys.readouterr().out
    texts = {json.loads(line)["messages"][-1]["content"] for line in (tmp_path / "t.jsonl").read_text().splitlines()}
    assert texts and all(json.loads(line)["correct"] for line in (tmp_path / "t.jsonl").read_text().splitlines())
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "ttsearch report: error: no such experiment directory" in capsys.readouterr().err
    shard = write_experiment(tmp_path / "other", recipe_hash="z" * 64)
    assert main(["report", str(exp), str(shard)]) == 2
    assert "not shards of one experiment" in capsys.readouterr().err


def test_a_runs_own_selection_comes_from_its_records_when_the_recipe_leaves_it_out(tmp_path: Path) -> None:
    # Particle filtering and MCTS select with "naive" by default; a recipe entry that does
    # not say so left the manifest's config without it, and the report once labelled (and
    # headlined) such runs with "weighted".
    from ttsearch.study.load import _spec

    declared = {"label": "pf", "strategy": "particle_filtering", "n": 4, "kind": "stepwise", "seed": 0}
    declared["config"] = {"strategy": "particle_filtering", "n": 4}
    record = {"unique_id": "p1", "strategy": "particle_filtering", "selection": "naive", "n": 4}
    assert _spec("pf-n4-s0", declared, record, tmp_path / "pf.jsonl").selection == "naive"
    declared["config"]["selection"] = "weighted"  # the recipe's own choice wins
    assert _spec("pf-n4-s0", declared, record, tmp_path / "pf.jsonl").selection == "weighted"
