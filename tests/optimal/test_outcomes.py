import json

import pytest

from tests.optimal.helpers import write_beam, write_best_of_n, write_majority, write_run
from ttsearch.errors import ExperimentError
from ttsearch.study.optimal.outcomes import build_outcomes
from ttsearch.study.optimal.records import load_runs

MIXED = [("7", 0.9, True, 10), ("3", 0.2, False, 20), ("3", 0.3, False, 30), ("3", 0.1, False, 40)]
RIGHT = [("7", 0.8, True, 10)] * 4


def _experiment(tmp_path, **kwargs):
    write_best_of_n(tmp_path, 0, {"a": MIXED, "b": RIGHT}, **kwargs)
    write_best_of_n(tmp_path, 1, {"a": RIGHT, "b": RIGHT}, **kwargs)
    write_beam(tmp_path, 0, {"a": RIGHT[:2], "b": MIXED[1:3]}, **kwargs)
    return build_outcomes(load_runs([tmp_path]))


def test_sampling_budgets_average_disjoint_groups_and_seeds(tmp_path):
    out = _experiment(tmp_path)
    assert out.problems == ("a", "b") and out.budgets == (1, 2, 4) and out.num_seeds == 2
    assert [o.name for o in out.options] == [
        "beam/majority",
        "beam/naive",
        "beam/weighted",
        "best_of_n/majority",
        "best_of_n/naive",
        "best_of_n/weighted",
    ]
    acc = lambda name, n: out.cells[(name, n)].accuracy.tolist()
    # Problem a, seed 0: k=1 -> 1 of 4 groups right; k=2 -> [7,3] right, [3,3] wrong;
    # k=4 -> majority says 3 (wrong), naive and weighted say 7 (0.9 > 0.2+0.3+0.1). Seed 1: all right.
    assert acc("best_of_n/majority", 1) == [pytest.approx(0.625), 1.0]
    assert acc("best_of_n/weighted", 2) == [0.75, 1.0]
    assert acc("best_of_n/majority", 4) == [0.5, 1.0]
    assert acc("best_of_n/naive", 4) == [1.0, 1.0]
    # Stepwise runs are reported at their own N only.
    assert ("beam/weighted", 2) not in out.cells
    assert acc("beam/weighted", 4) == [1.0, 0.0]
    # Tokens: a k-group costs its own samples' tokens; seed 0 group means for problem a at k=2:
    # (10+20, 30+40) -> 50; seed 1: 20. Verifier tokens pro rata: 40 * 2/4 = 20.
    cell = out.cells[("best_of_n/weighted", 2)]
    assert cell.generated_tokens.tolist() == [35.0, 20.0]
    assert cell.verifier_tokens.tolist() == [20.0, 20.0]
    # Difficulty: pass@1 over the sampling runs' samples; mean PRM score of the predictor run.
    assert out.pass_rate.tolist() == [5 / 8, 1.0]
    assert out.mean_score.tolist() == pytest.approx([(1.5 + 3.2) / 8, 0.8])
    assert out.predictor is not None and (out.predictor.label, out.predictor.reduction) == ("best_of_n", "last")


def test_unscored_runs_offer_only_majority_and_no_predictor(tmp_path):
    write_majority(tmp_path, 0, {"a": RIGHT[:2]}, budgets=[1, 2], config={"selection": "majority"})
    out = build_outcomes(load_runs([tmp_path]))
    assert [o.name for o in out.options] == ["majority/majority"]
    assert out.mean_score is None and out.predictor is None


def test_missing_correct_flags_are_graded_and_failed_problems_are_left_out(tmp_path):
    write_best_of_n(
        tmp_path,
        0,
        {"a": [("7", 0.5, False, 1), ("3", 0.4, False, 1)], "b": RIGHT[:2], "c": RIGHT[:2]},
        n=2,
        budgets=None,
        with_correct=False,
        errors=["b"],
    )
    out = build_outcomes(load_runs([tmp_path]))
    assert out.problems == ("a", "c") and out.dropped == ("b",)
    assert out.cells[("best_of_n/weighted", 2)].accuracy.tolist() == [1.0, 1.0]  # "7" graded equal to gold "7"


def test_problems_missing_from_a_run_are_dropped_and_named(tmp_path):
    write_run(tmp_path, label="x", strategy="best_of_n", kind="sampling", n=1, seed=0, problems={"a": RIGHT[:1]})
    write_run(
        tmp_path,
        label="y",
        strategy="best_of_n",
        kind="sampling",
        n=1,
        seed=0,
        problems={"a": RIGHT[:1], "b": RIGHT[:1]},
    )
    out = build_outcomes(load_runs([tmp_path]))
    assert out.problems == ("a",) and out.dropped == ("b",)


def test_shards_merge_and_a_problem_in_two_shards_is_an_error(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    write_run(one, label="x", strategy="best_of_n", kind="sampling", n=1, seed=0, problems={"a": RIGHT[:1]})
    write_run(two, label="x", strategy="best_of_n", kind="sampling", n=1, seed=0, problems={"b": RIGHT[:1]})
    (run,) = load_runs([one, two])
    assert sorted(run.problems) == ["a", "b"]
    write_run(two, label="x", strategy="best_of_n", kind="sampling", n=1, seed=0, problems={"a": RIGHT[:1]})
    with pytest.raises(ExperimentError, match="'a' of run x-n1-s0 is in both"):
        load_runs([one, two])


def test_bad_directories_and_records_are_named(tmp_path):
    with pytest.raises(ExperimentError, match="no manifest.json"):
        load_runs([tmp_path])
    (tmp_path / "manifest.json").write_text(json.dumps({"recipe_hash": "h", "runs": []}))
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "x-n1-s0.jsonl").write_text(json.dumps({"unique_id": "a", "label": "x"}) + "\n")
    with pytest.raises(ExperimentError, match="lacks field"):
        load_runs([tmp_path])
    record = {"unique_id": "a", "gold": "7", "candidates": [{"answer": "7"}], "n": 1, "kind": "sampling"}
    (tmp_path / "runs" / "x-n1-s0.jsonl").write_text(json.dumps(record) + "\n")
    with pytest.raises(ExperimentError, match="run x-n1-s0, record 1: lacks a field the analysis needs"):
        load_runs([tmp_path])


def test_answers_the_runner_could_not_grade_are_graded_here_not_read_as_wrong(tmp_path):
    # A run whose grader was down records `"correct": null` and a `grade_error`
    # (docs/records.md); reading null as False would count right answers as wrong.
    write_best_of_n(tmp_path, 0, {"a": RIGHT[:2]}, n=2, budgets=None)
    path = next((tmp_path / "runs").glob("*.jsonl"))
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for record in records:
        record.update(correct=None, answer="7", grade_error="grader worker did not start")
        for candidate in record["candidates"]:
            candidate["correct"] = None
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    (run,) = load_runs([tmp_path])
    assert run.problems["a"].correct is True
    assert [c.correct for c in run.problems["a"].candidates] == [True, True]
