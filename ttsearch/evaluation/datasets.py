"""Loading evaluation problems (MATH-500 and similar) into `Problem` records.

Sources are a local JSONL file (one JSON object per line) or a Hugging Face dataset id
such as "HuggingFaceH4/MATH-500"; the `datasets` package is only imported for the latter
(`pip install datasets`, or the `hf` extra). Every record goes through one validator, so
both sources give the same `Problem`s and the same errors: a `DatasetError` naming the
source, the line (or row) and the field at fault.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ttsearch.errors import DatasetError

MATH500_HF_ID = "HuggingFaceH4/MATH-500"

# "owner/name" or "name", as on the Hub; anything else is taken for a file path.
_HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_LEVEL_TEXT = re.compile(r"^\s*(?:level\s*)?(\d+)\s*$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Problem:
    """One evaluation problem."""

    problem: str  # the question, as given to the policy
    answer: str  # gold final answer (LaTeX as in the source)
    subject: str | None  # e.g. "Algebra"; None when the source has none
    level: int | None  # MATH difficulty 1 (easiest) .. 5; None when unknown
    unique_id: str  # stable id, e.g. "test/precalculus/807.json"
    solution: str | None  # reference solution, if any


def load_math500(source: str | Path = MATH500_HF_ID, *, split: str = "test", limit: int | None = None) -> list[Problem]:
    """Load MATH-500 from a local JSONL file or a Hugging Face dataset id.

    A `Path`, an existing file, or a string that does not look like a Hub id
    ("owner/name") is read as JSONL; otherwise `split` of that Hub dataset is loaded.

    :raises DatasetError: on a missing file or an invalid record.
    :raises ImportError: for a Hub id when `datasets` is not installed.
    """
    if _is_local(source):
        return load_problems_jsonl(source, limit=limit)
    return load_problems_hf(str(source), split=split, limit=limit)


def load_problems_jsonl(
    path: str | Path,
    *,
    problem_key: str = "problem",
    answer_key: str = "answer",
    limit: int | None = None,
) -> list[Problem]:
    """Load problems from a JSONL file; `problem_key` / `answer_key` name the two required fields.

    Blank lines are skipped. Optional fields: `subject`, `level`, `unique_id` (defaults to
    "<file name>:<line>"), `solution`.

    :raises DatasetError: naming the file and line of the first problem found.
    """
    path = Path(path)
    _check_limit(limit)
    if not path.is_file():
        raise DatasetError(f"dataset file not found: {path}")

    def records() -> Iterable[tuple[str, Mapping[str, Any], str]]:
        with path.open("rb") as f:
            for lineno, raw in enumerate(f, start=1):
                where = f"{path}, line {lineno}"
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DatasetError(f"{where}: not valid UTF-8 ({e.reason})") from e
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DatasetError(f"{where}: malformed JSON: {e.msg} (column {e.colno})") from e
                yield where, obj, f"{path.name}:{lineno}"

    return _collect(records(), problem_key, answer_key, limit, str(path))


def load_problems_hf(
    dataset_id: str,
    *,
    split: str = "test",
    problem_key: str = "problem",
    answer_key: str = "answer",
    limit: int | None = None,
) -> list[Problem]:
    """Load problems from a Hugging Face dataset (needs the optional `datasets` package)."""
    _check_limit(limit)
    try:
        import datasets  # optional dependency; heavy, so only imported here
    except ImportError as e:
        raise ImportError(
            f"loading {dataset_id!r} from the Hugging Face Hub needs the `datasets` package: "
            "pip install datasets (or pip install 'ttsearch[hf]'), "
            "or pass the path of a local JSONL file instead"
        ) from e
    rows = datasets.load_dataset(dataset_id, split=split)
    source = f"{dataset_id} [{split}]"

    def records() -> Iterable[tuple[str, Mapping[str, Any], str]]:
        for i, row in enumerate(rows):
            yield f"{source}, row {i}", row, f"{dataset_id}:{split}:{i}"

    return _collect(records(), problem_key, answer_key, limit, source)


def parse_level(value: Any) -> int | None:
    """A MATH level as an int 1-5: accepts 3, "3", "Level 3"; None and "Level ?" give None.

    :raises ValueError: on anything else.
    """
    if value is None:
        return None
    if isinstance(value, str):
        if value.strip().lower() == "level ?":  # used by a few problems of the MATH train split
            return None
        m = _LEVEL_TEXT.match(value)
        if m is None:
            raise ValueError(f"level must be an int 1-5 or 'Level N', got {value!r}")
        value = int(m.group(1))
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"level must be an int 1-5 or 'Level N', got {value!r}")
    if not 1 <= value <= 5:
        raise ValueError(f"level must be between 1 and 5, got {value}")
    return value


def _is_local(source: str | Path) -> bool:
    if isinstance(source, Path):
        return True
    p = Path(source).expanduser()
    return p.is_file() or p.suffix in {".jsonl", ".json"} or _HF_ID.match(source) is None


def _check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a non-negative int or None, got {limit!r}")


def _collect(
    records: Iterable[tuple[str, Mapping[str, Any], str]],
    problem_key: str,
    answer_key: str,
    limit: int | None,
    source: str,
) -> list[Problem]:
    problems: list[Problem] = []
    seen: dict[str, str] = {}  # unique_id -> where it was first seen
    for where, obj, default_id in records:
        if limit is not None and len(problems) >= limit:
            break
        p = _to_problem(obj, where, default_id, problem_key, answer_key)
        if p.unique_id in seen:
            raise DatasetError(f"{where}: duplicate unique_id {p.unique_id!r} (first at {seen[p.unique_id]})")
        seen[p.unique_id] = where
        problems.append(p)
    if not problems and limit != 0:
        raise DatasetError(f"{source}: no problems found")
    return problems


def _to_problem(obj: Any, where: str, default_id: str, problem_key: str, answer_key: str) -> Problem:
    if not isinstance(obj, Mapping):
        raise DatasetError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    problem = _required_text(obj, problem_key, where, numbers_ok=False)
    # Some datasets (GSM8K-style) store numeric answers; their text is unambiguous.
    answer = _required_text(obj, answer_key, where, numbers_ok=True)
    try:
        level = parse_level(obj.get("level"))
    except ValueError as e:
        raise DatasetError(f"{where}: field 'level': {e}") from e
    unique_id = _optional_text(obj, "unique_id", where)
    return Problem(
        problem=problem,
        answer=answer,
        subject=_optional_text(obj, "subject", where),
        level=level,
        unique_id=unique_id if unique_id else default_id,
        solution=_optional_text(obj, "solution", where),
    )


def _required_text(obj: Mapping[str, Any], key: str, where: str, *, numbers_ok: bool) -> str:
    if key not in obj or obj[key] is None:
        raise DatasetError(f"{where}: missing required field {key!r}")
    value = obj[key]
    if numbers_ok and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise DatasetError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise DatasetError(f"{where}: required field {key!r} is empty")
    return value


def _optional_text(obj: Mapping[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise DatasetError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    return value
