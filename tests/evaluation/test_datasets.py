"""Tests for loading MATH-500 / JSONL problems and the errors on bad records."""

from __future__ import annotations

import builtins
import json
import sys
import types
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from ttsearch.errors import DatasetError
from ttsearch.evaluation import datasets as ds
from ttsearch.evaluation.datasets import Problem, load_math500, load_problems_jsonl, parse_level

GOOD = {"problem": "What is $1+1$?", "answer": "2", "subject": "Prealgebra", "level": 1, "unique_id": "t/1"}


def write_jsonl(path: Path, records: list[Any]) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------- the real file


def test_load_math500_from_shared_file(shared_dir: Path) -> None:
    problems = load_math500(shared_dir / "data/math500.jsonl")
    assert len(problems) == 500
    first = problems[0]
    assert first.unique_id == "test/precalculus/807.json"
    assert first.answer == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert first.subject == "Precalculus" and first.level == 2
    assert first.solution is not None and "\\boxed" in first.solution
    assert Counter(p.level for p in problems) == {1: 43, 2: 90, 3: 105, 4: 128, 5: 134}
    assert len({p.unique_id for p in problems}) == 500
    assert Counter(p.subject for p in problems)["Algebra"] == 124


def test_load_math500_path_given_as_string_and_limit(shared_dir: Path) -> None:
    problems = load_math500(str(shared_dir / "data/math500.jsonl"), limit=3)
    assert [p.unique_id for p in problems][:1] == ["test/precalculus/807.json"]
    assert len(problems) == 3


# ---------------------------------------------------------------- records


def test_minimal_record_gets_defaults(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"problem": "Q?", "answer": "4"}, "", {"problem": "R?", "answer": 7}])
    problems = load_problems_jsonl(path)
    assert problems == [
        Problem(problem="Q?", answer="4", subject=None, level=None, unique_id="p.jsonl:1", solution=None),
        # Blank line 2 is skipped; numeric answers become text.
        Problem(problem="R?", answer="7", subject=None, level=None, unique_id="p.jsonl:3", solution=None),
    ]


def test_custom_keys(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "g.jsonl", [{"question": "Q?", "final": "5"}])
    (p,) = load_problems_jsonl(path, problem_key="question", answer_key="final")
    assert (p.problem, p.answer) == ("Q?", "5")
    with pytest.raises(DatasetError, match="missing required field 'problem'"):
        load_problems_jsonl(path)


@pytest.mark.parametrize(
    ("raw", "level"), [(3, 3), ("Level 4", 4), ("level 2", 2), ("5", 5), (None, None), ("Level ?", None)]
)
def test_parse_level_accepts(raw: Any, level: int | None) -> None:
    assert parse_level(raw) == level


@pytest.mark.parametrize("raw", [0, 6, "Level 9", "hard", 2.0, True, [3]])
def test_parse_level_rejects(raw: Any) -> None:
    with pytest.raises(ValueError, match="level"):
        parse_level(raw)


def test_level_text_converted_when_loading(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "l.jsonl", [{**GOOD, "level": "Level 5"}])
    assert load_problems_jsonl(path)[0].level == 5


# ---------------------------------------------------------------- errors


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "math500.jsonl"
    with pytest.raises(DatasetError, match="not found") as e:
        load_math500(missing)
    assert str(missing) in str(e.value)
    # A string ending in .jsonl is a path, never a Hub id.
    with pytest.raises(DatasetError, match="not found"):
        load_math500(str(missing))


def test_malformed_json_names_file_and_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [GOOD, '{"problem": "Q", "answer": '])
    with pytest.raises(DatasetError, match=r"bad\.jsonl, line 2: malformed JSON") as e:
        load_problems_jsonl(path)
    assert isinstance(e.value, ValueError)


@pytest.mark.parametrize(
    ("record", "match"),
    [
        ({"answer": "1"}, "line 2: missing required field 'problem'"),
        ({"problem": "Q", "answer": None}, "line 2: missing required field 'answer'"),
        ({"problem": "  ", "answer": "1"}, "line 2: required field 'problem' is empty"),
        ({"problem": "Q", "answer": ""}, "line 2: required field 'answer' is empty"),
        ({"problem": ["Q"], "answer": "1"}, "line 2: field 'problem' must be a string, got list"),
        ({"problem": "Q", "answer": True}, "line 2: field 'answer' must be a string, got bool"),
        ({**GOOD, "unique_id": "x", "level": 7}, "line 2: field 'level': level must be between 1 and 5"),
        ({**GOOD, "unique_id": "x", "level": "easy"}, "line 2: field 'level'"),
        ({**GOOD, "unique_id": "x", "subject": 3}, "line 2: field 'subject' must be a string"),
        ({**GOOD, "unique_id": 12}, "line 2: field 'unique_id' must be a string"),
        ([1, 2], "line 2: expected a JSON object, got list"),
        (GOOD, "line 2: duplicate unique_id 't/1'"),
    ],
)
def test_bad_records_name_the_line(tmp_path: Path, record: Any, match: str) -> None:
    path = write_jsonl(tmp_path / "r.jsonl", [GOOD, record])
    with pytest.raises(DatasetError, match=match):
        load_problems_jsonl(path)


def test_invalid_utf8_and_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "u.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n\xff\xfe\n")
    with pytest.raises(DatasetError, match="line 2: not valid UTF-8"):
        load_problems_jsonl(path)
    empty = tmp_path / "e.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(DatasetError, match="no problems found"):
        load_problems_jsonl(empty)


def test_bad_limit(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [GOOD])
    with pytest.raises(ValueError, match="limit"):
        load_problems_jsonl(path, limit=-1)
    assert load_problems_jsonl(path, limit=0) == []


# ---------------------------------------------------------------- Hugging Face dispatch


def test_hub_id_without_datasets_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_datasets(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "datasets":
            raise ModuleNotFoundError("No module named 'datasets'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "datasets", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_datasets)
    with pytest.raises(ImportError, match="pip install datasets"):
        load_math500("HuggingFaceH4/MATH-500")
    with pytest.raises(ImportError, match="pip install datasets"):
        load_math500()  # the default source is the Hub id


def test_hub_id_dispatches_to_datasets(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []
    rows = [
        {**GOOD, "level": "Level 3"},
        {"problem": "Q2", "answer": "9", "subject": "Algebra", "level": 5, "unique_id": "t/2", "solution": "s"},
    ]

    def load_dataset(name: str, split: str) -> list[dict[str, Any]]:
        calls.append((name, split))
        return rows

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    problems = load_math500("HuggingFaceH4/MATH-500")
    assert calls == [("HuggingFaceH4/MATH-500", "test")]
    assert [p.level for p in problems] == [3, 5]
    assert problems[1].solution == "s"

    rows.append({"problem": "Q3"})
    with pytest.raises(DatasetError, match=r"HuggingFaceH4/MATH-500 \[test\], row 2: missing required field 'answer'"):
        load_math500("HuggingFaceH4/MATH-500")


def test_existing_file_wins_over_hub_id_lookalike(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # "owner/name" is a Hub id unless such a file exists.
    (tmp_path / "owner").mkdir()
    write_jsonl(tmp_path / "owner" / "name", [GOOD])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(ds, "load_problems_hf", lambda *a, **k: pytest.fail("went to the Hub"))
    assert load_math500("owner/name")[0].unique_id == "t/1"
