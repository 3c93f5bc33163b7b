"""Reading experiment directories (the contract in docs/records.md) into one `Experiment`.

An experiment directory holds `manifest.json` and `runs/<run_id>.jsonl` (one record per
finished problem). Several directories are shards of one experiment: they must share the
recipe hash, and their runs are merged by run_id; a problem found in two shards of the
same run is an error naming both directories. A torn last line (a run killed mid-write)
is dropped with a warning by `ttsearch.records.read_records`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttsearch.errors import ExperimentError, RecordsError
from ttsearch.evaluation.metrics import BudgetKind, default_ks
from ttsearch.records import read_records, record_kind, record_n

MANIFEST = "manifest.json"
RUNS_DIR = "runs"
REQUIRED_FIELDS = ("unique_id", "gold", "candidates")


@dataclass(frozen=True, slots=True)
class RunSpec:
    """One (strategy entry, N, seed) run, as the manifest (or its records) describe it."""

    run_id: str
    label: str  # the recipe's strategy entry name (unique in a recipe)
    strategy: str  # registry name (or class name in records of older runs)
    kind: BudgetKind  # "sampling": read at every budget <= n; "stepwise": at n only
    n: int
    seed: int
    budgets: tuple[int, ...]  # the N values this run is reported at
    config: dict[str, Any] = field(default_factory=dict)  # the strategy's fields as run

    @property
    def selection(self) -> str:
        """The strategy's own answer selection (what the plots and compute view show)."""
        sel = self.config.get("selection")
        if sel in ("majority", "naive", "weighted"):
            return str(sel)
        return "majority" if self.strategy in ("majority", "MajorityVoting") else "weighted"


@dataclass(frozen=True, slots=True)
class Run:
    spec: RunSpec
    records: tuple[dict[str, Any], ...]  # one per finished problem, in file order

    @property
    def failed(self) -> int:
        return sum(r.get("error") is not None for r in self.records)


@dataclass(frozen=True, slots=True)
class Experiment:
    """Every run of one experiment (one directory, or its shards merged)."""

    dirs: tuple[Path, ...]
    manifest: dict[str, Any]  # the first directory's manifest
    runs: tuple[Run, ...]  # sorted by (label, n, seed)

    @property
    def recipe_hash(self) -> str | None:
        return self.manifest.get("recipe_hash")

    @property
    def labels(self) -> tuple[str, ...]:
        """Strategy entries in recipe order (falling back to first appearance)."""
        order = [r["label"] for r in self.manifest.get("runs", []) if isinstance(r, dict) and "label" in r]
        seen = dict.fromkeys(order)
        for run in self.runs:
            seen.setdefault(run.spec.label)
        return tuple(label for label in seen if any(r.spec.label == label for r in self.runs))

    def runs_of(self, label: str) -> tuple[Run, ...]:
        return tuple(r for r in self.runs if r.spec.label == label)


def load_experiment(dirs: str | Path | Sequence[str | Path]) -> Experiment:
    """Read one experiment directory, or several shards of one experiment.

    :raises ExperimentError: a missing directory or manifest, an unreadable file, shards
        with different recipe hashes, a problem in two shards of one run, a record
        missing a required field, or no finished problem at all.
    """
    paths = [Path(dirs)] if isinstance(dirs, (str, Path)) else [Path(d) for d in dirs]
    if not paths:
        raise ExperimentError("no experiment directory given")
    if len({p.resolve() for p in paths}) != len(paths):
        raise ExperimentError(f"an experiment directory is given twice: {[str(p) for p in paths]}")
    manifests = [_read_manifest(p) for p in paths]
    first_hash = manifests[0].get("recipe_hash")
    for path, manifest in zip(paths[1:], manifests[1:]):
        if manifest.get("recipe_hash") != first_hash:
            raise ExperimentError(
                f"{path} and {paths[0]} are not shards of one experiment: recipe_hash "
                f"{manifest.get('recipe_hash')!r} != {first_hash!r}"
            )

    specs: dict[str, RunSpec] = {}
    records: dict[str, dict[str, dict[str, Any]]] = {}  # run_id -> unique_id -> record
    source: dict[tuple[str, str], Path] = {}  # (run_id, unique_id) -> dir
    for path, manifest in zip(paths, manifests):
        declared = {s.get("run_id"): s for s in manifest.get("runs", []) if isinstance(s, dict)}
        for file in sorted((path / RUNS_DIR).glob("*.jsonl")):
            run_id = file.stem
            try:
                file_records = read_records(file)
            except RecordsError as error:
                raise ExperimentError(str(error)) from None
            if not file_records:
                continue
            for r in file_records:
                missing = [f for f in REQUIRED_FIELDS if f not in r]
                if missing:
                    raise ExperimentError(f"{file}: problem {r.get('unique_id')!r} lacks field(s) {missing}")
                if not isinstance(r["candidates"], list):
                    raise ExperimentError(f"{file}: problem {r['unique_id']!r}: candidates is not a list")
            spec = _spec(run_id, declared.get(run_id), file_records[0], file)
            if run_id in specs and specs[run_id] != spec:
                raise ExperimentError(f"run {run_id} is described differently in two shards (one of them {path})")
            specs[run_id] = spec
            run_records = records.setdefault(run_id, {})
            for r in file_records:
                uid = str(r["unique_id"])
                if (run_id, uid) in source:
                    raise ExperimentError(
                        f"problem {uid!r} of run {run_id} is in both {source[(run_id, uid)]} and {path}"
                    )
                source[(run_id, uid)] = path
                run_records[uid] = r
    if not records:
        where = ", ".join(str(p) for p in paths)
        raise ExperimentError(f"no finished problems in {where} (no records under {RUNS_DIR}/)")
    runs = tuple(
        sorted(
            (Run(specs[rid], tuple(rs.values())) for rid, rs in records.items()),
            key=lambda r: (r.spec.label, r.spec.n, r.spec.seed, r.spec.run_id),
        )
    )
    return Experiment(dirs=tuple(paths), manifest=manifests[0], runs=runs)


def _read_manifest(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ExperimentError(f"no such experiment directory: {path}")
    if not path.is_dir():
        raise ExperimentError(f"not a directory: {path}")
    file = path / MANIFEST
    if not file.exists():
        raise ExperimentError(f"{path} is not an experiment directory: it has no {MANIFEST}")
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ExperimentError(f"{file}: not valid JSON ({error.msg}, line {error.lineno})") from None
    if not isinstance(manifest, dict):
        raise ExperimentError(f"{file}: expected a JSON object")
    return manifest


def _spec(run_id: str, declared: dict[str, Any] | None, record: dict[str, Any], file: Path) -> RunSpec:
    """The run's spec from the manifest, else from its first record (same fields)."""
    src = declared if declared is not None else record
    config = dict(src.get("config") or record.get("config") or {})
    if "selection" not in config and isinstance(record.get("selection"), str):
        # A recipe entry that leaves `selection` to the strategy's default: the records
        # say which selection the strategy used (particle filtering and MCTS: "naive").
        config["selection"] = record["selection"]
    n = src.get("n") if isinstance(src.get("n"), int) else record_n(record)
    if n is None:
        raise ExperimentError(f"{file}: run {run_id} does not say its N (no 'n' in the manifest or records)")
    kind = src.get("kind") or record_kind(record)
    if kind not in ("sampling", "stepwise"):
        raise ExperimentError(f"{file}: run {run_id} has unknown kind {kind!r}")
    budgets = src.get("budgets") or ([n] if kind == "stepwise" else list(default_ks(n)))
    if kind == "stepwise" and list(budgets) != [n]:
        raise ExperimentError(
            f"{file}: stepwise run {run_id} at n={n} lists budgets {budgets}; it can only be reported at {n}"
        )
    if any(not isinstance(b, int) or not 1 <= b <= n for b in budgets):
        raise ExperimentError(f"{file}: run {run_id}: budgets {budgets} must be ints in 1..n={n}")
    strategy = str(src.get("strategy") or record.get("strategy") or "unknown")
    seed = src.get("seed", record.get("seed", 0))
    return RunSpec(
        run_id=run_id,
        label=str(src.get("label") or record.get("label") or strategy),
        strategy=strategy,
        kind=kind,
        n=n,
        seed=int(seed) if isinstance(seed, int) else 0,
        budgets=tuple(sorted(set(budgets))),
        config=dict(config),
    )
