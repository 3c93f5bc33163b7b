"""The result record: one JSON line per finished problem, the format every runner writes
and every reader (report, store, compute-optimal analysis, export) reads.

The fields, their meaning and the versions are documented in docs/records.md; this module
reads a results file and answers the two questions every reader asks of a record (its
budget kind and its N), with the fallbacks for records written before a field existed.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from ttsearch.errors import RecordsError
from ttsearch.evaluation.metrics import BUDGET_KINDS, BudgetKind

# 1: the first format (no "record_version"); 2: adds "record_version", "kind" and "n".
RECORD_VERSION = 2

# Strategy names (registry and class names) of version-1 records that were sampling runs.
_SAMPLING_BEFORE_V2 = frozenset({"majority", "best_of_n", "MajorityVoting", "BestOfN"})


def read_records(path: Path) -> list[dict[str, Any]]:
    """Records of a results file, one per problem, in the order they were written.

    A torn last line (a run killed mid-write) is dropped. A later record of a problem
    replaces its earlier one (a retried or regraded problem is appended, never rewritten
    in place, so a kill during the retry loses nothing) and takes its place in the order.
    """
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").split("\n")
    records: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines) or (number == len(lines) - 1 and not lines[-1]):
                # Torn final write (a run killed mid-line): that problem simply runs again.
                warnings.warn(f"{path}:{number}: dropping a torn last line (an unfinished write)", stacklevel=2)
                break
            raise RecordsError(f"{path}:{number}: not valid JSON ({error.msg})") from None
        if not isinstance(record, dict) or "unique_id" not in record:
            raise RecordsError(f"{path}:{number}: not a ttsearch result record (no unique_id)")
        uid = str(record["unique_id"])
        records.pop(uid, None)  # the replacement goes where it was written: last
        records[uid] = record
    return list(records.values())


def record_kind(record: dict[str, Any]) -> BudgetKind:
    """ "sampling" or "stepwise": the record's "kind", else what its strategy is."""
    kind = record.get("kind")
    if kind is not None:
        if kind not in BUDGET_KINDS:
            raise RecordsError(f"problem {record.get('unique_id')!r}: unknown kind {kind!r}")
        return kind  # type: ignore[no-any-return]  # checked against BUDGET_KINDS just above
    strategy = record.get("strategy")
    # Records without "kind" predate it (version 1): the sampling strategies then were
    # majority voting and best-of-N; records without a strategy were sampled, as `run` did first.
    if not isinstance(strategy, str):
        return "sampling"
    return "sampling" if strategy in _SAMPLING_BEFORE_V2 else "stepwise"


def record_n(record: dict[str, Any]) -> int | None:
    """The N a record's strategy ran with, or None when the record does not say."""
    n = record.get("n", (record.get("config") or {}).get("n"))
    return n if isinstance(n, int) and not isinstance(n, bool) and n >= 1 else None
