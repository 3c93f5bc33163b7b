"""`ttsearch.study.report` on a hand-made experiment directory, checked against hand computation.

The fixture (written below, docs/records.md layout) has five problems p1..p5 (gold "1".."5",
MATH levels 1..5) and three strategy entries:

* "bon": best_of_n (sampling), n=4, budgets 1, 2, 4, seeds 0 and 1; seed 1 equals seed 0
  except that p4 is solved by every sample. Seed 0 records carry per-candidate "correct";
  seed 1's do not (the report grades them).
* "maj": majority (sampling, no scores), n=4, budgets 1, 4, seed 0, the same answers as bon
  seed 0.
* "beam": beam (stepwise) at n=2 and n=4, seed 0; at n=4, p4 failed and p5 returned only
  3 candidates.

Per-problem results of bon seed 0 (k=2 and k=4 are means over disjoint groups):

    p1 "1" x4 (.9 .8 .7 .6)        every method 1 at every k
    p2 2 .2 | 5 .9 | 2 .3 | 5 .1   k=1 .5; k=2 maj 1 (ties -> earliest) naive .5 weighted .5;
                                   k=4 maj 1, naive 0 (.9 says 5), weighted 0 (5: 1.0 vs 2: .5)
    p3 4 .5 | 4 .5 | 3 .9 | 4 .5   k=1 .25; k=2 .5 .5 .5; k=4 maj 0, naive 1, weighted 0 (4: 1.5)
    p4 None .1 | 7 .2 | 7 .3 | 7 .4  0 everywhere
    p5 5 .6 | 6 .5 | 6 .5 | 5 .6   k=1 .5; k=2 maj .5 (second group ties -> 6) naive 1 weighted 1;
                                   k=4 all 1
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pytest

from ttsearch.evaluation.metrics import pass_at_k
from ttsearch.study.report import build_report, format_table, load_experiment, write_report

GOLD = {f"p{i}": str(i) for i in range(1, 6)}
BON_S0 = {
    "p1": [("1", 0.9), ("1", 0.8), ("1", 0.7), ("1", 0.6)],
    "p2": [("2", 0.2), ("5", 0.9), ("2", 0.3), ("5", 0.1)],
    "p3": [("4", 0.5), ("4", 0.5), ("3", 0.9), ("4", 0.5)],
    "p4": [(None, 0.1), ("7", 0.2), ("7", 0.3), ("7", 0.4)],
    "p5": [("5", 0.6), ("6", 0.5), ("6", 0.5), ("5", 0.6)],
}
BON_S1 = {**BON_S0, "p4": [("4", 0.6)] * 4}
BEAM_N2 = {
    "p1": [("1", 0.9), ("1", 0.8)],
    "p2": [("5", 0.9), ("2", 0.3)],
    "p3": [("3", 0.9), ("3", 0.8)],
    "p4": [("7", 0.9), (None, 0.1)],
    "p5": [("5", 0.9), ("6", 0.2)],
}
BEAM_N4 = {
    "p1": [("1", 0.9)] * 4,
    "p2": [("2", 0.9), ("2", 0.8), ("5", 0.7), ("5", 0.6)],
    "p3": [("4", 0.9), ("3", 0.8), ("3", 0.7), ("4", 0.1)],
    "p4": None,  # failed
    "p5": [("5", 0.9), ("6", 0.8), ("6", 0.7)],
}
STRATEGY = {"bon": "best_of_n", "maj": "majority", "beam": "beam"}
SELECTION = {"bon": "weighted", "maj": "majority", "beam": "weighted"}


def exact(gold: str, pred: str) -> bool:
    return gold == pred


def spec(label: str, n: int, seed: int, budgets: list[int]) -> dict[str, Any]:
    return {
        "run_id": f"{label}-n{n}-s{seed}",
        "label": label,
        "strategy": STRATEGY[label],
        "config": {"n": n, "selection": SELECTION[label]},
        "kind": "stepwise" if label == "beam" else "sampling",
        "n": n,
        "seed": seed,
        "budgets": budgets,
    }


def record(
    s: dict[str, Any],
    uid: str,
    cands: list[tuple[str | None, float]] | None,
    *,
    with_correct: bool,
    usage: dict[str, float],
) -> dict[str, Any]:
    scored = s["label"] != "maj"
    candidates = []
    for _j, (answer, score) in enumerate(cands or []):
        c: dict[str, Any] = {
            "text": f"## Step 1: think\n\nThe answer is {answer}.",
            "answer": answer,
            "step_scores": [score] if scored else [],
            "score": score if scored else 0.0,
            "finish": "stop",
            "num_tokens": 10,
        }
        if with_correct:
            c["correct"] = answer == GOLD[uid]
        candidates.append(c)
    return {
        "unique_id": uid,
        "problem": f"What is {GOLD[uid]}?",
        "gold": GOLD[uid],
        "subject": "Algebra",
        "level": int(uid[1]),
        "strategy": s["strategy"],
        "config": s["config"],
        "selection": SELECTION[s["label"]],
        "answer": None,
        "correct": False,
        "error": "prompt too long" if cands is None else None,
        "candidates": candidates,
        "usage": usage,
        "run_id": s["run_id"],
        "label": s["label"],
        "n": s["n"],
        "seed": s["seed"],
        "kind": s["kind"],
        "budgets": s["budgets"],
        "index": int(uid[1]) - 1,
        "date_string": "26 Jul 2024",
    }


RUNS = [
    (spec("bon", 4, 0, [1, 2, 4]), BON_S0, True, {"generated_tokens": 400, "verifier_tokens": 100, "seconds": 2.0}),
    (
        spec("bon", 4, 1, [1, 2, 4]),
        BON_S1,
        False,
        {"generated_tokens": 400, "verifier_tokens": 100, "seconds": 2.0, "verifier_cached_tokens": 40},
    ),
    (spec("maj", 4, 0, [1, 4]), BON_S0, False, {"generated_tokens": 400, "verifier_tokens": 0, "seconds": 1.0}),
    (spec("beam", 2, 0, [2]), BEAM_N2, False, {"generated_tokens": 300, "verifier_tokens": 90, "seconds": 3.0}),
    (spec("beam", 4, 0, [4]), BEAM_N4, False, {"generated_tokens": 1000, "verifier_tokens": 200, "seconds": 5.0}),
]


def write_experiment(root: Path, *, recipe_hash: str = "h" * 64, only: dict[str, list[str]] | None = None) -> Path:
    """Write the fixture; `only` limits run_id -> problems (to make shards)."""
    (root / "runs").mkdir(parents=True)
    specs = []
    for s, problems, with_correct, usage in RUNS:
        specs.append(s)
        uids = only.get(s["run_id"], []) if only is not None else list(problems)
        lines = []
        for uid in uids:
            u = dict(usage)
            if problems[uid] is None:
                u["generated_tokens"] = 10  # a failed problem still spent something
            lines.append(json.dumps(record(s, uid, problems[uid], with_correct=with_correct, usage=u)))
        if lines:
            (root / "runs" / f"{s['run_id']}.jsonl").write_text("\n".join(lines) + "\n")
    manifest = {
        "recipe": {"name": "hand-made", "system_prompt": "Solve it."},
        "recipe_hash": recipe_hash,
        "ttsearch_version": "0.1",
        "vllm_version": "0.32.0",
        "python": "3.11",
        "machine": {"platform": "test", "cpu_count": 2, "gpu": None},
        "started_at": "2026-11-29T00:00:00Z",
        "finished_at": "2026-11-29T00:10:00Z",
        "shard": None,
        "runs": specs,
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


@pytest.fixture
def report(tmp_path: Path):  # type: ignore[no-untyped-def]
    return build_report(load_experiment(write_experiment(tmp_path / "exp")), grader=exact)


SEED0 = {  # bon seed 0, per method, at k = 1, 2, 4 (means over p1..p5 of the table above)
    "majority": (2.25 / 5, 3 / 5, 3 / 5),
    "naive": (2.25 / 5, 3 / 5, 3 / 5),
    "weighted": (2.25 / 5, 3 / 5, 2 / 5),
    "pass": (
        (1 + 0.5 + 0.25 + 0 + 0.5) / 5,
        (1 + pass_at_k(4, 2, 2) + pass_at_k(4, 1, 2) + 0 + pass_at_k(4, 2, 2)) / 5,
        4 / 5,
    ),
}


def test_sampling_strategy_accuracy_mean_and_std_over_seeds(report) -> None:  # type: ignore[no-untyped-def]
    bon = report.strategy("bon")
    assert bon.ks == (1, 2, 4) and bon.kind == "sampling" and bon.selection == "weighted"
    assert bon.seeds == (0, 1)
    for method, seed0 in SEED0.items():
        curve = bon.overall.curve(method)
        seed1 = [x + 0.2 for x in seed0]  # seed 1 also solves p4 (1 of 5 problems) at every k
        assert [list(s) for s in curve.per_seed] == [pytest.approx(seed0), pytest.approx(seed1)], method
        assert curve.mean == pytest.approx([x + 0.1 for x in seed0]), method
        assert curve.std == pytest.approx([0.2 / math.sqrt(2)] * 3), method  # sample std of two values 0.2 apart


def test_majority_strategy_has_only_majority_and_pass_at_its_budgets(report) -> None:  # type: ignore[no-untyped-def]
    maj = report.strategy("maj")
    assert maj.ks == (1, 4)  # its recipe budgets, not 1, 2, 4
    assert maj.overall.methods == ("majority", "pass")
    assert maj.overall.curve("majority").mean == pytest.approx((SEED0["majority"][0], SEED0["majority"][2]))
    assert maj.overall.curve("pass").mean == pytest.approx((SEED0["pass"][0], SEED0["pass"][2]))


def test_stepwise_strategy_is_reported_at_each_run_n(report) -> None:  # type: ignore[no-untyped-def]
    beam = report.strategy("beam")
    assert beam.ks == (2, 4) and beam.kind == "stepwise"
    # N=2 over 5 problems: p1 p3 p5 right (p2's 2-way tie goes to the earlier "5"); pass: all but p4.
    # N=4 over the 4 problems that did not fail: p2 right everywhere; p3 "4" wins maj (tie) and naive,
    # "3" wins weighted (1.5 vs 1.0); p5 "6" wins maj and weighted (1.5 vs .9), "5" naive.
    assert beam.overall.curve("majority").mean == pytest.approx((3 / 5, 2 / 4))
    assert beam.overall.curve("naive").mean == pytest.approx((3 / 5, 3 / 4))
    assert beam.overall.curve("weighted").mean == pytest.approx((3 / 5, 3 / 4))
    assert beam.overall.curve("pass").mean == pytest.approx((4 / 5, 1.0))
    assert [r.failed for r in beam.runs] == [0, 1]
    assert report.problems == 5


def test_math_levels_and_difficulty_bins(report) -> None:  # type: ignore[no-untyped-def]
    # Oracle pass@1 over the sampling runs' 12 candidates per problem (bon s0, bon s1, maj):
    # p1 12/12, p2 6/12, p3 3/12, p4 4/12 (bon s1 only), p5 6/12. p2 and p5 tie: the SHA-256
    # of the unique_id decides which is easier.
    oracle = report.bins["oracle"]
    assert oracle.statistic == pytest.approx({"p1": 1.0, "p2": 0.5, "p3": 0.25, "p4": 4 / 12, "p5": 0.5})
    assert oracle.samples == 60
    p2_first = hashlib.sha256(b"p2").hexdigest() < hashlib.sha256(b"p5").hexdigest()
    assert oracle.level == {"p1": 1, "p2": 2 if p2_first else 3, "p5": 3 if p2_first else 2, "p4": 4, "p3": 5}
    # Predicted: mean PRM score of the scored candidates (bon's 8; maj has none):
    # p1 .75, p2 .375, p3 .6, p4 (1.0 + 2.4) / 8 = .425, p5 .55.
    predicted = report.bins["predicted"]
    assert predicted.statistic == pytest.approx({"p1": 0.75, "p2": 0.375, "p3": 0.6, "p4": 0.425, "p5": 0.55})
    assert predicted.level == {"p1": 1, "p3": 2, "p5": 3, "p4": 4, "p2": 5}
    # bon's weighted@4 per problem (seed 0, seed 1): p1 1,1; p2 0,0; p3 0,0; p4 0,1; p5 1,1.
    bon = report.strategy("bon")
    by_pred = {lv: t.accuracy("weighted", 4) for lv, t in bon.by_bin["predicted"].items()}
    assert by_pred == pytest.approx({1: 1.0, 2: 0.0, 3: 1.0, 4: 0.5, 5: 0.0})
    by_oracle = {lv: t.accuracy("weighted", 4) for lv, t in bon.by_bin["oracle"].items()}
    assert by_oracle == pytest.approx(
        {1: 1.0, 2: 0.0 if p2_first else 1.0, 3: 1.0 if p2_first else 0.0, 4: 0.5, 5: 0.0}
    )
    # Bin 4 is p4 alone: 0 at seed 0 and 1 at seed 1 at every budget.
    assert bon.by_bin["predicted"][4].curve("weighted").std == pytest.approx([math.sqrt(0.5)] * 3)
    # MATH levels are the records' own (p_i has level i).
    assert {lv: t.accuracy("majority", 2) for lv, t in bon.by_level.items()} == pytest.approx(
        {1: 1.0, 2: 1.0, 3: 0.5, 4: 0.5, 5: 0.5}  # p4: seed 0 0, seed 1 1
    )


def test_compute_per_problem(report) -> None:  # type: ignore[no-untyped-def]
    bon = report.strategy("bon")
    # 400 generated tokens per problem at N=4; budget k is charged k/4 of it.
    assert [c.usage["generated_tokens"] for c in bon.compute] == pytest.approx([100, 200, 400])
    assert [c.usage["seconds"] for c in bon.compute] == pytest.approx([0.5, 1.0, 2.0])
    # A field only seed 1 has counts as 0 for seed 0: (0 + 40) / 2 at N=4.
    assert bon.compute[-1].usage["verifier_cached_tokens"] == pytest.approx(20)
    beam = report.strategy("beam")
    # At N=4 the failed problem's compute counts: (4 * 1000 + 10) / 5.
    assert [c.usage["generated_tokens"] for c in beam.compute] == pytest.approx([300, 802])
    assert [r.usage["verifier_tokens"] for r in beam.runs] == pytest.approx([90, 200])


def test_compute_counts_prm_tokens_computed_and_cached_apart(report) -> None:  # type: ignore[no-untyped-def]
    bon = report.strategy("bon")
    # Neither bon run recorded verifier_computed_tokens: seed 0 has no cache count either
    # (computed = sent, 100), seed 1 cached 40 of its 100 (computed 60).
    assert [r.usage["verifier_computed_tokens"] for r in bon.runs] == pytest.approx([100, 60])
    assert bon.compute[-1].usage["verifier_computed_tokens"] == pytest.approx(80)
    assert [c.usage["verifier_computed_tokens"] for c in bon.compute] == pytest.approx([20, 40, 80])
    text = format_table(report)
    header = next(line for line in text.splitlines() if line.startswith("strategy") and "N" in line.split())
    columns = header.split()
    assert columns[4:7] == ["generated_tokens", "verifier_computed_tokens", "verifier_cached_tokens"]
    assert "verifier_tokens - verifier_cached_tokens" in text and "what was sent" in text


def test_per_problem_scores_are_data(report) -> None:  # type: ignore[no-untyped-def]
    rows = report.strategy("bon").problem_scores()
    assert len(rows) == 10
    p3 = next(r for r in rows if r["unique_id"] == "p3" and r["seed"] == 0)
    assert p3["scores"]["majority"] == {"1": 0.25, "2": 0.5, "4": 0.0}
    assert p3["scores"]["naive"]["4"] == 1.0
    beam_rows = report.strategy("beam").problem_scores()
    at2 = next(r for r in beam_rows if r["unique_id"] == "p2" and r["n"] == 2)
    assert at2["scores"]["naive"] == {"2": 0.0, "4": None}  # no such budget in that run


def test_candidates_without_correct_are_graded_once_per_distinct_answer(tmp_path: Path) -> None:
    calls: list[tuple[str, str]] = []

    def counting(gold: str, pred: str) -> bool:
        calls.append((gold, pred))
        return gold == pred

    build_report(load_experiment(write_experiment(tmp_path / "exp")), grader=counting)
    # bon seed 0 records carry "correct" for every answer the other runs give, except
    # seed 1's "4" for p4: the only grading needed.
    assert calls == [("4", "4")]


def test_write_report_outputs(report, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    files = write_report(report, tmp_path / "out")
    summary = json.loads(files.summary.read_text())
    bon = next(s for s in summary["strategies"] if s["label"] == "bon")
    assert bon["accuracy"]["methods"]["weighted"]["mean"] == pytest.approx([x + 0.1 for x in SEED0["weighted"]])
    assert summary["bins"]["predicted"]["level"]["p2"] == 5
    beam = next(s for s in summary["strategies"] if s["label"] == "beam")
    assert beam["accuracy"]["methods"]["naive"]["per_seed"] == [[0.6, None], [None, 0.75]]
    assert len(files.per_problem.read_text().splitlines()) == 10 + 5 + 9
    for png in files.figures:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {p.name for p in files.figures} == {
        "accuracy_vs_n.png",
        "accuracy_vs_compute.png",
        "bins_oracle.png",
        "bins_predicted.png",
        "bins_level.png",
        "compute_optimal.png",  # issue #10: per-bin choice vs fixed strategies
    }
    optimal_text = (tmp_path / "out" / "compute_optimal.txt").read_text()
    assert "compute-optimal, oracle (gold answers, same samples) (CV)" in optimal_text
    assert "compute-optimal, oracle (gold answers, another seed's samples) (CV)" in optimal_text
    page = files.html.read_text()
    assert page.count("data:image/png;base64,") == 6 and "<img" in page and 'src="http' not in page
    assert "disjoint groups" in page and "beam" in page
    assert "Compute-optimal scaling" in page and "per-bin choice, predicted (PRM probe of 2" in page
    text = format_table(report)
    assert files.text.read_text() == text + "\n"
    assert "disjoint groups" in text
    assert "Best-of-N (weighted)" in text and "pass@k (oracle)" in text


def test_format_table_shows_hand_computed_cells(report) -> None:  # type: ignore[no-untyped-def]
    text = format_table(report)
    # bon weighted: 55.0 ± 14.1 at N=1 (45 and 65), 70.0 ± 14.1, 50.0 ± 14.1 at N=4.
    line = next(l for l in text.splitlines() if l.startswith("Best-of-N (weighted)") and "±" in l)
    assert line.split()[2:] == ["55.0", "±", "14.1", "70.0", "±", "14.1", "50.0", "±", "14.1"]
    assert "(1 failed problem(s) left out)" in text
    # The bin tables have a row per strategy and N (a winner can change with the budget);
    # bon's weighted@4 per predicted bin as computed in test_math_levels_and_difficulty_bins.
    predicted = text.split("accuracy % by predicted difficulty bin")[1].split("\n\n")[0]
    bon_rows = [line.split() for line in predicted.splitlines() if line.startswith("bon ")]
    assert [row[1] for row in bon_rows] == ["1", "2", "4"]
    assert bon_rows[-1][2:] == ["100.0", "0.0", "100.0", "50.0", "0.0"]


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The figures the report's plot functions save, in order (each still written)."""
    from ttsearch.study.report import plots

    saved: list[Any] = []
    real_save = plots._save

    def keep(fig, path, dpi):  # type: ignore[no-untyped-def]
        saved.append(fig)
        return real_save(fig, path, dpi)

    monkeypatch.setattr(plots, "_save", keep)
    return saved


def test_accuracy_vs_n_plot_is_log2_with_one_line_per_strategy(report, tmp_path: Path, figures) -> None:  # type: ignore[no-untyped-def]
    from ttsearch.study.report import plots

    plots.plot_accuracy_vs_n(report, tmp_path / "a.png")
    majority, _naive, weighted = figures[0].axes
    assert majority.get_xscale() == "log" and majority.xaxis.get_transform().base == 2
    assert [line.get_label() for line in majority.get_lines()] == ["bon", "maj", "beam"]
    assert [line.get_label() for line in weighted.get_lines()] == ["bon", "beam"]  # majority has no scores
    bon = weighted.get_lines()[0]
    assert list(bon.get_xdata()) == [1, 2, 4]
    assert list(bon.get_ydata()) == pytest.approx([100 * (x + 0.1) for x in SEED0["weighted"]])
    assert list(weighted.get_lines()[1].get_xdata()) == [2, 4]


def test_accuracy_vs_compute_plot_has_a_total_panel_and_the_weighted_vote_beside_another_selection(
    report, tmp_path: Path, figures
) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    from ttsearch.study.report import plots

    bon = next(s for s in report.strategies if s.label == "bon")
    # A strategy whose own selection is the best final reward (as particle filtering's).
    naive_bon = replace(bon, selection="naive")
    plots.plot_accuracy_vs_compute(replace(report, strategies=(naive_bon,)), tmp_path / "c.png")
    policy, prm, total = figures[0].axes
    assert [ax.get_ylabel() for ax in (policy, prm, total)] == ["Accuracy (%)"] * 3
    assert total.get_xlabel() == "generated + PRM computed tokens per problem"
    own, weighted = total.get_lines()
    assert (own.get_label(), own.get_linestyle()) == ("bon (naive)", "-")
    assert (weighted.get_label(), weighted.get_linestyle()) == ("bon (weighted)", "--")
    points = [c for c in bon.compute if c.usage.get("generated_tokens", 0) > 0]
    assert list(own.get_xdata()) == pytest.approx(
        [c.usage["generated_tokens"] + c.usage.get("verifier_computed_tokens", 0.0) for c in points]
    )
    assert list(weighted.get_ydata()) == pytest.approx([100 * bon.accuracy(c.k, "weighted") for c in points])
    assert list(own.get_ydata()) == pytest.approx([100 * bon.accuracy(c.k, "naive") for c in points])
    assert [line.get_label() for line in policy.get_lines()] == ["bon (naive)", "bon (weighted)"]
    assert prm.get_xlabel() == "verifier computed tokens per problem"
