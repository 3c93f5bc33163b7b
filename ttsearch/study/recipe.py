"""Experiment recipes: one YAML file names the models, the data, the sampling and every
(strategy, N, seed) point of a study. Parsing is strict and happens before any engine
starts: an unknown field is named with the allowed ones, a value of the wrong type names
its dotted path.

    policy:   {model: meta-llama/Llama-3.2-1B-Instruct, memory_fraction: 0.3}
    prm:      {model: RLHFlow/Llama3.1-8B-PRM-Deepseek-Data, format: rlhflow, memory_fraction: 0.6}
    dataset:  {source: HuggingFaceH4/MATH-500}
    sampling: {temperature: 0.8, max_tokens: 2048}
    strategies:
      - {strategy: best_of_n, n: [1, 4, 16, 64, 256]}
      - {strategy: beam, n: [4, 16, 64, 256], width: 4, max_depth: 40}
    seeds: [0, 1, 2, 3, 4]

Relative paths in a recipe are relative to the recipe file. `execution` settings (how
much runs at once) do not change results, so they are not part of the recipe's hash.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ttsearch.backends.prm_formats import PRM_FORMATS
from ttsearch.errors import RecipeError
from ttsearch.strategies.registry import STRATEGIES

__all__ = [
    "DatasetSpec",
    "ExecutionSpec",
    "ModelSpec",
    "PrmSpec",
    "Recipe",
    "RecipeError",
    "SamplingSpec",
    "StrategyEntry",
    "apply_overrides",
    "changed_fields",
    "load_recipe",
    "parse_recipe",
]

PRM_FORMAT_NAMES = (*PRM_FORMATS, "toy")  # "toy": the toy world's PRM (ttsearch.toy)
SCORER_MODES = ("auto", "generative", "pooling")
CHAT_FORMATS = ("auto", "tokenizer")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)?\s*$", re.IGNORECASE)


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """An in-process vLLM engine (`model`) or running vLLM servers (`url`)."""

    model: str | None = None  # local path or Hugging Face id; "toy": the shipped toy model
    url: tuple[str, ...] = ()  # vLLM OpenAI-compatible servers instead of an in-process engine
    tokenizer: str | None = None
    dtype: str = "auto"
    max_model_len: int = 4096
    kv_cache: int | None = None  # KV-cache bytes (YAML: 8GiB, 96MiB, or an int)
    memory_fraction: float | None = None  # gpu_memory_utilization
    tensor_parallel_size: int = 1
    # vLLM data-parallel ranks of the in-process engine (AsyncEngineArgs.data_parallel_size;
    # one model copy per rank, a problem's requests kept on one rank). Servers: vllm serve -dp.
    data_parallel_size: int = 1
    enforce_eager: bool = False
    engine_options: dict[str, Any] = field(default_factory=dict)  # AsyncEngineArgs, as they are


@dataclass(frozen=True, kw_only=True)
class PolicySpec(ModelSpec):
    chat_format: str = "auto"  # "auto": Llama 3 turns if the model is one; "tokenizer": its template
    date_string: str | None = "26 Jul 2024"  # the Llama 3.x template's "Today Date", pinned


@dataclass(frozen=True, kw_only=True)
class PrmSpec(ModelSpec):
    # a preset name, or {base: preset, step_tag: ..., label_tokens: [good, bad], ...}
    format: str | dict[str, Any] = "rlhflow"
    mode: str = "auto"  # "auto" | "generative" | "pooling"


@dataclass(frozen=True, kw_only=True)
class DatasetSpec:
    source: str = "HuggingFaceH4/MATH-500"  # JSONL path, Hugging Face id, or "toy"
    start: int = 0  # problems [start, end) of the file, in file order
    end: int | None = None  # for "toy": how many problems (required)
    sample: int | None = None  # then a seeded random subset of this many
    sample_seed: int = 0
    toy_seed: int | None = None  # "toy" only: the problem seed (default: the held-out seed)


@dataclass(frozen=True, kw_only=True)
class SamplingSpec:
    """Defaults of every strategy entry (an entry may set its own temperature / top_p)."""

    temperature: float = 0.8
    top_p: float = 1.0
    max_tokens: int = 2048  # generated tokens per solution
    max_step_tokens: int | None = None
    system_prompt: str | None = None  # None: Meta's Llama 3 math prompt (the blog's)


@dataclass(frozen=True, kw_only=True)
class StrategyEntry:
    """One line of the study: a strategy with its hyperparameters at several N."""

    label: str  # unique in the recipe (default: the strategy name)
    strategy: str  # registry name: majority, best_of_n, beam, dvts, lookahead, ...
    n: tuple[int, ...]
    options: dict[str, Any] = field(default_factory=dict)  # the strategy's own fields
    per_n: dict[int, dict[str, Any]] = field(default_factory=dict)  # overrides at one N


@dataclass(frozen=True, kw_only=True)
class ExecutionSpec:
    """How the study runs; never changes its results (not hashed)."""

    max_concurrent_problems: int = 64  # (run, problem) searches in flight at once
    max_policy_requests: int = 512
    max_verifier_requests: int = 1024
    fsync_seconds: float = 5.0  # results are flushed per record, fsynced at this interval
    request_timeout: float = 600.0  # vLLM servers: seconds before a request counts as failed
    kv_admission: bool = False  # also bound problems in flight by the engines' KV caches


@dataclass(frozen=True, kw_only=True)
class Recipe:
    name: str
    policy: PolicySpec
    prm: PrmSpec | None
    dataset: DatasetSpec
    sampling: SamplingSpec
    strategies: tuple[StrategyEntry, ...]
    seeds: tuple[int, ...] = (0,)
    execution: ExecutionSpec = field(default_factory=ExecutionSpec)
    base_dir: Path = Path(".")  # where relative paths are resolved (the recipe's folder)

    def resolve_path(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    def to_dict(self) -> dict[str, Any]:
        """The recipe as plain data (what the manifest stores; `parse_recipe` reads it back)."""
        data: dict[str, Any] = {
            "name": self.name,
            "policy": _spec_dict(self.policy),
            "prm": None if self.prm is None else _spec_dict(self.prm),
            "dataset": asdict(self.dataset),
            "sampling": asdict(self.sampling),
            "strategies": [_entry_dict(e) for e in self.strategies],
            "seeds": list(self.seeds),
            "execution": asdict(self.execution),
        }
        return data

    def results_dict(self) -> dict[str, Any]:
        """The fields that decide results: everything but `execution`."""
        data = self.to_dict()
        del data["execution"]
        return data

    @property
    def hash(self) -> str:
        text = json.dumps(self.results_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _spec_dict(spec: ModelSpec) -> dict[str, Any]:
    data = asdict(spec)
    data["url"] = list(spec.url)
    if spec.data_parallel_size == 1:
        del data["data_parallel_size"]  # added later: the default leaves older recipes' hashes as they were
    return data


def _entry_dict(entry: StrategyEntry) -> dict[str, Any]:
    data: dict[str, Any] = {"label": entry.label, "strategy": entry.strategy, "n": list(entry.n)}
    data.update(entry.options)
    if entry.per_n:
        data["per_n"] = {str(k): dict(v) for k, v in sorted(entry.per_n.items())}  # as JSON keeps them
    return data


# -- parsing ---------------------------------------------------------------------------------


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """Read and validate a recipe file; `overrides` are "dotted.key=value" strings
    (YAML values) applied before validation.

    :raises RecipeError: an unreadable file, invalid YAML, or an invalid field.
    """
    file = Path(path)
    if not file.is_file():
        raise RecipeError(f"recipe file not found: {file}")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise RecipeError(f"{file}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{file}: a recipe is a YAML mapping (policy:, prm:, dataset:, strategies:, ...)")
    data = apply_overrides(data, overrides)
    data.setdefault("name", file.stem)
    return parse_recipe(data, base_dir=file.resolve().parent, where=str(file))


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply "a.b=value" overrides (value parsed as YAML) to a copy of `data`.
    Strategy entries are addressed by label: "strategies.beam.width=8"."""
    out = copy.deepcopy(dict(data))
    for text in overrides:
        key, sep, raw = text.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"override {text!r}: expected key=value, e.g. sampling.temperature=1.0")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as error:
            raise RecipeError(f"override {text!r}: value is not valid YAML: {error}") from None
        parts = key.strip().split(".")
        node: Any = out
        for depth, part in enumerate(parts[:-1]):
            if isinstance(node, list):  # strategies: find the entry by label
                node = _entry_by_label(node, part, key)
                continue
            if not isinstance(node, dict):
                raise RecipeError(f"override {text!r}: {'.'.join(parts[:depth])} is not a mapping")
            if node.get(part) is None:
                node[part] = {} if parts[depth + 1] != "" else None
            node = node[part]
        if isinstance(node, list):
            raise RecipeError(f"override {text!r}: address a strategy entry by label, e.g. strategies.beam.width=8")
        if not isinstance(node, dict):
            raise RecipeError(f"override {text!r}: {'.'.join(parts[:-1])} is not a mapping")
        node[parts[-1]] = value
    return out


def _entry_by_label(entries: list[Any], label: str, key: str) -> dict[str, Any]:
    for entry in entries:
        if isinstance(entry, dict) and str(entry.get("label", entry.get("strategy"))) == label:
            return entry
    labels = [str(e.get("label", e.get("strategy"))) for e in entries if isinstance(e, dict)]
    raise RecipeError(f"override {key!r}: no strategy entry labelled {label!r}; the entries are {labels}")


def parse_recipe(data: Mapping[str, Any], *, base_dir: Path = Path("."), where: str = "recipe") -> Recipe:
    """Validate plain data (a parsed YAML recipe, or `Recipe.to_dict()`) into a `Recipe`."""
    top = _Fields(data, where, ("name", "policy", "prm", "dataset", "sampling", "strategies", "seeds", "execution"))
    name = top.get("name", str, "experiment")
    if not name.strip():
        raise RecipeError(f"{where}: name is empty")
    policy = _model_spec(PolicySpec, top.required("policy", dict), f"{where}: policy")
    prm_data = top.get("prm", dict, None)
    prm = None if prm_data is None else _model_spec(PrmSpec, prm_data, f"{where}: prm")
    dataset = _simple(DatasetSpec, top.get("dataset", dict, {}), f"{where}: dataset")
    sampling = _simple(SamplingSpec, top.get("sampling", dict, {}), f"{where}: sampling")
    execution = _simple(ExecutionSpec, top.get("execution", dict, {}), f"{where}: execution")
    entries_data = top.required("strategies", list)
    if not entries_data:
        raise RecipeError(f"{where}: strategies is empty; list at least one, e.g. - {{strategy: best_of_n, n: [1, 4]}}")
    entries = tuple(_entry(e, f"{where}: strategies[{i}]") for i, e in enumerate(entries_data))
    labels = [e.label for e in entries]
    duplicated = sorted({label for label in labels if labels.count(label) > 1})
    if duplicated:
        raise RecipeError(f"{where}: strategy labels must be unique; repeated: {duplicated} (give each entry a label:)")
    seeds = top.get("seeds", (list, int), [0])
    seeds_t = tuple([seeds] if isinstance(seeds, int) else seeds)
    if not seeds_t or any(not _is_int(s) or s < 0 for s in seeds_t) or len(set(seeds_t)) != len(seeds_t):
        raise RecipeError(f"{where}: seeds must be distinct non-negative ints, got {seeds!r}")
    recipe = Recipe(
        name=name,
        policy=policy,
        prm=prm,
        dataset=dataset,
        sampling=sampling,
        strategies=entries,
        seeds=seeds_t,
        execution=execution,
        base_dir=base_dir,
    )
    _check_values(recipe, where)
    return recipe


class _Fields:
    """A mapping whose keys must be among `allowed`."""

    def __init__(self, data: Any, where: str, allowed: Sequence[str]) -> None:
        if not isinstance(data, Mapping):
            raise RecipeError(f"{where}: expected a mapping, got {type(data).__name__}")
        unknown = [k for k in data if k not in allowed]
        if unknown:
            raise RecipeError(f"{where}: unknown field(s) {unknown}; allowed: {list(allowed)}")
        self.data, self.where = data, where

    def required(self, key: str, kind: type | tuple[type, ...]) -> Any:
        if self.data.get(key) is None:
            raise RecipeError(f"{self.where}: missing required field {key!r}")
        return self.get(key, kind, None)

    def get(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        value = self.data.get(key)
        if value is None:
            return default
        if not _isinstance(value, kind):
            raise RecipeError(f"{self.where}.{key}: expected {_kind_name(kind)}, got {value!r}")
        return value


def _isinstance(value: Any, kind: type | tuple[type, ...]) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    for k in kinds:
        if k is int and _is_int(value):
            return True
        if k is float and (isinstance(value, float) or _is_int(value)):
            return True
        if k not in (int, float) and isinstance(value, k) and not (k is not bool and isinstance(value, bool)):
            return True
        if k is bool and isinstance(value, bool):
            return True
    return False


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {str: "a string", int: "an int", float: "a number", bool: "true/false", list: "a list", dict: "a mapping"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


# The YAML type each dataclass field accepts (from its annotation text).
_ANNOTATION_KINDS: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "str | None": (str,),
    "int": (int,),
    "int | None": (int,),
    "float": (float,),
    "float | None": (float,),
    "bool": (bool,),
    "dict[str, Any]": (dict,),
    "tuple[str, ...]": (list, str),
    "str | dict[str, Any]": (str, dict),
}


def _simple(cls: type, data: Mapping[str, Any], where: str) -> Any:
    names = [f.name for f in fields(cls)]
    spec = _Fields(data, where, names)
    values: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in data:
            continue
        if data[f.name] is None:
            if "None" not in str(f.type):
                raise RecipeError(f"{where}.{f.name}: must not be null")
            values[f.name] = None
            continue
        kinds = _ANNOTATION_KINDS[str(f.type)]
        value = spec.get(f.name, kinds, None)
        if f.name in ("kv_cache",) and isinstance(value, str):
            value = _parse_size(value, f"{where}.{f.name}")
        elif str(f.type).startswith("float") and _is_int(value):
            value = float(value)
        if str(f.type) == "tuple[str, ...]":
            value = (value,) if isinstance(value, str) else tuple(value)
            if any(not isinstance(v, str) for v in value):
                raise RecipeError(f"{where}.{f.name}: expected strings, got {list(value)!r}")
        values[f.name] = value
    return cls(**values)


def _model_spec(cls: type, data: Mapping[str, Any], where: str) -> Any:
    data = dict(data)
    if isinstance(data.get("kv_cache"), str):
        data["kv_cache"] = _parse_size(data["kv_cache"], f"{where}.kv_cache")
    if isinstance(data.get("url"), str):
        data["url"] = [data["url"]]
    spec = _simple(cls, data, where)
    if spec.model is None and not spec.url:
        raise RecipeError(f"{where}: give model (a path or Hugging Face id) or url (vLLM servers)")
    return spec


def parse_size(text: str) -> int:
    """'96MiB', '8g', '1048576' -> bytes.

    :raises ValueError: not a size.
    """
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"not a size: {text!r} (examples: 96MiB, 8GiB, 1048576)")
    number, unit = float(match.group(1)), match.group(2).lower()
    return int(number * 1024 ** " kmgt".index(unit or " "))


def _parse_size(text: str, where: str) -> int:
    try:
        return parse_size(text)
    except ValueError as error:
        raise RecipeError(f"{where}: {error}") from None


_ENTRY_KEYS = ("label", "strategy", "n", "per_n")


def _entry(data: Any, where: str) -> StrategyEntry:
    if not isinstance(data, Mapping):
        raise RecipeError(f"{where}: expected a mapping like {{strategy: beam, n: [4, 16], width: 4}}, got {data!r}")

    strategy = data.get("strategy")
    if not isinstance(strategy, str):
        raise RecipeError(f"{where}: missing field 'strategy' (one of {sorted(STRATEGIES)})")
    if strategy not in STRATEGIES:
        raise RecipeError(f"{where}: unknown strategy {strategy!r}; choose from {sorted(STRATEGIES)}")
    cls = STRATEGIES[strategy]
    allowed_options = [f for f in getattr(cls, "__dataclass_fields__", {}) if f != "n"]
    options = {k: v for k, v in data.items() if k not in _ENTRY_KEYS}
    unknown = [k for k in options if k not in allowed_options]
    if unknown:
        raise RecipeError(
            f"{where} ({strategy}): unknown field(s) {unknown}; allowed: {list(_ENTRY_KEYS) + allowed_options}"
        )
    label = data.get("label", strategy)
    if not isinstance(label, str) or not re.fullmatch(r"[A-Za-z0-9_.+-]+", label):
        raise RecipeError(f"{where}: label must be letters, digits and _ . + - only (it names files), got {label!r}")
    ns = data.get("n")
    if ns is None:
        raise RecipeError(f"{where} ({label}): missing field 'n' (a budget or a list of budgets, e.g. [1, 4, 16])")
    ns_t = (ns,) if _is_int(ns) else tuple(ns) if isinstance(ns, list) else None  # a bool (n: true) is not a budget
    if not ns_t or any(not _is_int(n) or n < 1 for n in ns_t) or len(set(ns_t)) != len(ns_t):
        raise RecipeError(f"{where} ({label}): n must be distinct positive ints, got {ns!r}")
    per_n_data = data.get("per_n") or {}
    if not isinstance(per_n_data, Mapping):
        raise RecipeError(f"{where} ({label}).per_n: expected a mapping {{N: {{field: value}}}}")
    per_n: dict[int, dict[str, Any]] = {}
    for key, value in per_n_data.items():
        n = int(key) if isinstance(key, str) and key.isdigit() else key
        if not _is_int(n) or n not in ns_t:
            raise RecipeError(f"{where} ({label}).per_n: {key!r} is not one of this entry's n {list(ns_t)}")
        if not isinstance(value, Mapping):
            raise RecipeError(f"{where} ({label}).per_n.{n}: expected a mapping of fields")
        bad = [k for k in value if k not in allowed_options]
        if bad:
            raise RecipeError(f"{where} ({label}).per_n.{n}: unknown field(s) {bad}; allowed: {allowed_options}")
        per_n[n] = dict(value)
    return StrategyEntry(label=label, strategy=strategy, n=tuple(sorted(ns_t)), options=options, per_n=per_n)


def _check_values(recipe: Recipe, where: str) -> None:
    for name, spec in (("policy", recipe.policy), ("prm", recipe.prm)):
        if spec is None:
            continue
        if spec.model is not None and not spec.model.strip():
            raise RecipeError(f"{where}: {name}.model is empty")
        if spec.max_model_len < 16:
            raise RecipeError(f"{where}: {name}.max_model_len must be >= 16, got {spec.max_model_len}")
        if spec.memory_fraction is not None and not 0 < spec.memory_fraction <= 1:
            raise RecipeError(f"{where}: {name}.memory_fraction must be in (0, 1], got {spec.memory_fraction}")
        if spec.kv_cache is not None and spec.kv_cache <= 0:
            raise RecipeError(f"{where}: {name}.kv_cache must be positive")
        if spec.tensor_parallel_size < 1:
            raise RecipeError(f"{where}: {name}.tensor_parallel_size must be >= 1")
        if spec.data_parallel_size < 1 or (spec.url and spec.data_parallel_size != 1):
            raise RecipeError(
                f"{where}: {name}.data_parallel_size must be >= 1, and only for an in-process "
                "model (servers take vllm serve --data-parallel-size)"
            )
        for url in spec.url:
            if not re.match(r"^https?://", url):
                raise RecipeError(f"{where}: {name}.url {url!r} is not an http(s) URL")
    if recipe.policy.chat_format not in CHAT_FORMATS:
        raise RecipeError(
            f"{where}: policy.chat_format must be one of {list(CHAT_FORMATS)}, got {recipe.policy.chat_format!r}"
        )
    if recipe.prm is not None:
        if recipe.prm.mode not in SCORER_MODES:
            raise RecipeError(f"{where}: prm.mode must be one of {list(SCORER_MODES)}, got {recipe.prm.mode!r}")
        fmt = recipe.prm.format
        if isinstance(fmt, str) and fmt not in PRM_FORMAT_NAMES:
            raise RecipeError(
                f"{where}: prm.format {fmt!r} is not a preset; choose from {list(PRM_FORMAT_NAMES)} "
                "or give {base: preset, step_tag: ..., label_tokens: [good, bad]}"
            )
    d = recipe.dataset
    if d.start < 0 or (d.end is not None and d.end <= d.start):
        raise RecipeError(f"{where}: dataset needs 0 <= start < end, got start={d.start}, end={d.end}")
    if d.sample is not None and d.sample < 1:
        raise RecipeError(f"{where}: dataset.sample must be >= 1, got {d.sample}")
    if d.source == "toy" and d.end is None:
        raise RecipeError(f"{where}: dataset.source 'toy' needs end (how many toy problems)")
    s = recipe.sampling
    if s.temperature < 0 or not 0 < s.top_p <= 1 or s.max_tokens < 1:
        raise RecipeError(f"{where}: sampling needs temperature >= 0, 0 < top_p <= 1, max_tokens >= 1")
    e = recipe.execution
    if e.max_concurrent_problems < 1 or e.max_policy_requests < 1 or e.max_verifier_requests < 1:
        raise RecipeError(f"{where}: execution limits must be >= 1")


def changed_fields(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Dotted paths whose values differ between two recipe dicts (strategies by label)."""
    return sorted(set(_diff(_normalise_for_diff(old), _normalise_for_diff(new), "")))


def _normalise_for_diff(data: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(data)
    if isinstance(out.get("strategies"), list):
        out["strategies"] = {str(e.get("label")): e for e in out["strategies"] if isinstance(e, dict)}
    return out


def _diff(a: Any, b: Any, path: str) -> list[str]:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out: list[str] = []
        for key in set(a) | set(b):
            sub = f"{path}.{key}" if path else str(key)
            if key not in a or key not in b:
                out.append(sub)
            else:
                out.extend(_diff(a[key], b[key], sub))
        return out
    return [] if a == b else [path]
