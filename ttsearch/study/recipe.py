"""Experiment recipes: one YAML file names the models, the data, the sampling and every
(strategy, N, seed) point of a study. Parsing is strict (pydantic models made from the
dataclasses below) and happens before any engine starts: an unknown field is named with the
allowed ones, a bad value with its dotted path and what the field takes.

    policy:   {model: meta-llama/Llama-3.2-1B-Instruct, memory_fraction: 0.3}
    prm:      {model: RLHFlow/Llama3.1-8B-PRM-Deepseek-Data, format: rlhflow, memory_fraction: 0.6}
    dataset:  {source: HuggingFaceH4/MATH-500}
    sampling: {temperature: 0.8, max_tokens: 2048}
    strategies:
      - {strategy: best_of_n, n: [1, 4, 16, 64, 256]}
      - {strategy: beam, n: [4, 16, 64, 256], width: 4, max_depth: 40}
    seeds: [0, 1, 2, 3, 4]

Relative paths in a recipe are relative to the recipe file. `execution` settings (how
much runs at once) and `ray` settings (where it runs with `--ray`) do not change results,
so they are not part of the recipe's hash.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args, get_type_hints

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, create_model
from pydantic_core import ErrorDetails

from ttsearch.backends.prm_formats import PRM_FORMATS
from ttsearch.errors import RecipeError
from ttsearch.strategies.catalog import option_fields
from ttsearch.strategies.registry import STRATEGIES

__all__ = [
    "DatasetSpec",
    "ExecutionSpec",
    "ModelSpec",
    "PrmSpec",
    "RaySpec",
    "Recipe",
    "RecipeError",
    "SamplingSpec",
    "StrategyEntry",
    "apply_overrides",
    "changed_fields",
    "load_recipe",
    "parse_recipe",
]

NOT_HASHED = ("execution", "ray")  # how and where a study runs, never what it computes
PRM_FORMAT_NAMES = (*PRM_FORMATS, "toy")  # "toy": the toy world's PRM (ttsearch.toy)
SCORER_MODES = ("auto", "generative", "pooling")
CHAT_FORMATS = ("auto", "tokenizer")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)?\s*$", re.IGNORECASE)


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """An in-process vLLM engine (`model`) or running vLLM servers (`url`)."""

    model: str | None = None  # local path or Hugging Face id; "toy": the shipped toy model ("toy-reviser": its reviser)
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
    # Revision prompts (strategy `revisions`): a user turn after each earlier attempt, for
    # instruct models not trained to revise ("default": ttsearch.prompts.REVISION_INSTRUCTION);
    # None: the attempts follow each other (a reviser fine-tuned that way, the toy one).
    revision_instruction: str | None = None


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
    # One run at a time, the PRM's score memo and prefix cache emptied between runs: each
    # run's PRM computed tokens are its own (False: runs overlap and share the caches, so
    # a later run's cost depends on the runs before it).
    isolate_runs: bool = True
    # Record each search's whole tree (trees/<run>.jsonl), and link every problem of the
    # report to a page drawing it: why a method chose its answer. Costs memory per search
    # in flight and disk per record (the trees of N=16 toy searches: ~10 kB each).
    keep_trees: bool = False


@dataclass(frozen=True, kw_only=True)
class RaySpec:
    """Where `ttsearch experiment --ray` runs the study (ttsearch.study.cluster); read only
    with `--ray`, and never changes its results (not hashed)."""

    address: str | None = None  # None: a local cluster for the run; "auto", "host:6379" or "ray://host:10001"
    workers: int | None = None  # Ray actors, each with its own engines (None: as many as the resources fit)
    # Per worker: num_cpus, num_gpus, memory (bytes or 8GiB), or a custom resource of the cluster.
    resources: dict[str, float] = field(default_factory=dict)
    max_restarts: int = 3  # times Ray restarts a worker that died (-1: always)
    env_vars: dict[str, str] = field(default_factory=dict)  # set in every worker's process (e.g. HF_TOKEN)


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
    ray: RaySpec | None = None  # the `ray:` section, if the recipe has one
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
            "sampling": _sampling_dict(self.sampling),
            "strategies": [_entry_dict(e) for e in self.strategies],
            "seeds": list(self.seeds),
            "execution": asdict(self.execution),
        }
        if self.ray is not None:  # only when given: the manifests of recipes without one stay as they were
            data["ray"] = asdict(self.ray)
        return data

    def results_dict(self) -> dict[str, Any]:
        """The fields that decide results: everything but `execution` and `ray`."""
        data = self.to_dict()
        for section in NOT_HASHED:
            data.pop(section, None)
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


def _sampling_dict(spec: SamplingSpec) -> dict[str, Any]:
    data = asdict(spec)
    if spec.revision_instruction is None:
        del data["revision_instruction"]  # added later: the default leaves older recipes' hashes as they were
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
    top = _validated(_RecipeFields, dict(data) if isinstance(data, Mapping) else data, where)
    name = "experiment" if top.name is None else top.name
    if not name.strip():
        raise RecipeError(f"{where}: name is empty")
    policy = _spec(PolicySpec, top.policy, where, "policy")
    prm = None if top.prm is None else _spec(PrmSpec, top.prm, where, "prm")
    dataset = _spec(DatasetSpec, top.dataset, where, "dataset")
    sampling = _spec(SamplingSpec, top.sampling, where, "sampling")
    execution = _spec(ExecutionSpec, top.execution, where, "execution")
    ray = None if top.ray is None else _spec(RaySpec, top.ray, where, "ray")
    if not top.strategies:
        raise RecipeError(f"{where}: strategies is empty; list at least one, e.g. - {{strategy: best_of_n, n: [1, 4]}}")
    entries = tuple(_entry(e, f"{where}: strategies[{i}]") for i, e in enumerate(top.strategies))
    labels = [e.label for e in entries]
    duplicated = sorted({label for label in labels if labels.count(label) > 1})
    if duplicated:
        raise RecipeError(f"{where}: strategy labels must be unique; repeated: {duplicated} (give each entry a label:)")
    seeds = [0] if top.seeds is None else top.seeds
    seeds_t = (seeds,) if isinstance(seeds, int) else tuple(seeds)
    if not seeds_t or any(s < 0 for s in seeds_t) or len(set(seeds_t)) != len(seeds_t):
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
        ray=ray,
        base_dir=base_dir,
    )
    _check_values(recipe, where)
    return recipe


# -- the schema: a strict pydantic model per section ------------------------------------------
#
# Each section's model is made from its dataclass's fields and annotations, plus what a field
# needs beyond its type (bounds, a choice, sizes, one url or a list). Strict: an int field
# refuses true and 1.0, a string field refuses 3; a float field takes an int, as a float. A
# field left out is not passed on, so the dataclasses' defaults are the only ones (`_UNSET`
# only makes a field optional in a model). `_validated` turns pydantic's ValidationError into
# one RecipeError naming the file, the field, what is wrong and what is allowed.

_UNSET: Any = None


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _RecipeFields(_Section):
    name: str | None = None  # null: "experiment"
    policy: dict[Any, Any]
    prm: dict[Any, Any] | None = None
    dataset: dict[Any, Any] | None = None
    sampling: dict[Any, Any] | None = None
    strategies: list[Any]  # the entries are checked by `_entry`
    seeds: list[int] | int | None = None
    execution: dict[Any, Any] | None = None
    ray: dict[Any, Any] | None = None


def _as_size(value: Any) -> Any:
    return parse_size(value) if isinstance(value, str) else value  # its ValueError names the text


def _as_tuple(value: list[str] | str) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def _ray_resources(value: Any) -> Any:
    """A worker's resources with `memory` as bytes (8GiB, 96MiB or a number)."""
    if isinstance(value, dict) and isinstance(value.get("memory"), str):
        return {**value, "memory": float(parse_size(value["memory"]))}  # its ValueError names the text
    return value


def _non_negative(resources: dict[str, float]) -> dict[str, float]:
    for name, amount in resources.items():
        if amount < 0:
            raise ValueError(f"{name} must be >= 0, got {amount:g}")
    return resources


def _ray_address(value: str | None) -> str | None:
    if value is not None and not re.fullmatch(r"auto|(ray://)?[A-Za-z0-9_.\-\[\]:]+:\d+", value):
        raise ValueError(
            f"not a Ray address: {value!r} (examples: auto, 10.0.0.1:6379, ray://head:10001; leave it out for "
            "a local cluster)"
        )
    return value


def _section_model(cls: type, **types: Any) -> type[BaseModel]:
    """A strict model of dataclass `cls`: its fields' annotations, or `types[name]`."""
    hints = get_type_hints(cls)
    definitions: dict[str, Any] = {f.name: (types.get(f.name, hints[f.name]), _UNSET) for f in fields(cls)}
    return create_model(f"_{cls.__name__}Fields", __base__=_Section, **definitions)


_AT_LEAST_1 = Annotated[int, Field(ge=1)]
_ENGINE_TYPES: dict[str, Any] = {
    "url": Annotated[list[str] | str, AfterValidator(_as_tuple)],  # one server or a list
    "max_model_len": Annotated[int, Field(ge=16)],
    "kv_cache": Annotated[int | None, Field(gt=0), BeforeValidator(_as_size)],  # 8GiB, 96MiB or bytes
    "memory_fraction": Annotated[float | None, Field(gt=0, le=1)],
    "tensor_parallel_size": _AT_LEAST_1,
    # data_parallel_size: checked with url by `_check_values`, one message for both
}
_SECTIONS: dict[type, type[BaseModel]] = {
    PolicySpec: _section_model(PolicySpec, **_ENGINE_TYPES, chat_format=Literal[CHAT_FORMATS]),
    # format: a preset's name is checked by `_check_values` (its message shows the other form)
    PrmSpec: _section_model(PrmSpec, **_ENGINE_TYPES, mode=Literal[SCORER_MODES]),
    # start < end: checked by `_check_values`, one message naming both
    DatasetSpec: _section_model(DatasetSpec, sample=Annotated[int | None, Field(ge=1)]),
    SamplingSpec: _section_model(
        SamplingSpec,
        temperature=Annotated[float, Field(ge=0)],
        top_p=Annotated[float, Field(gt=0, le=1)],
        max_tokens=_AT_LEAST_1,
    ),
    ExecutionSpec: _section_model(
        ExecutionSpec,
        max_concurrent_problems=_AT_LEAST_1,
        max_policy_requests=_AT_LEAST_1,
        max_verifier_requests=_AT_LEAST_1,
    ),
    RaySpec: _section_model(
        RaySpec,
        address=Annotated[str | None, AfterValidator(_ray_address)],
        workers=Annotated[int | None, Field(ge=1)],
        resources=Annotated[dict[str, float], BeforeValidator(_ray_resources), AfterValidator(_non_negative)],
        max_restarts=Annotated[int, Field(ge=-1)],
    ),
}

_Model = TypeVar("_Model", bound=BaseModel)
_Spec = TypeVar("_Spec")


def _spec(cls: type[_Spec], data: dict[Any, Any] | None, where: str, section: str) -> _Spec:
    """The dataclass `cls` from a section's data (None: all defaults)."""
    checked = _validated(_SECTIONS[cls], {} if data is None else data, where, section)
    return cls(**{name: getattr(checked, name) for name in checked.model_fields_set})


def _validated(model: type[_Model], data: Any, where: str, section: str = "") -> _Model:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise RecipeError(_message(model, error.errors(), where, section)) from None


_KINDS = {
    "string_type": "a string",
    "int_type": "an int",
    "float_type": "a number",
    "bool_type": "true/false",
    "list_type": "a list",
    "dict_type": "a mapping",
}


def _message(model: type[BaseModel], errors: list[ErrorDetails], where: str, section: str) -> str:
    """One message for a failed validation, in the style of the hand-written checks:
    "recipes/x.yaml: policy.max_model_len must be >= 16, got 8"."""
    head = f"{where}: {section}: " if section else f"{where}: "
    unknown = [e["loc"][0] for e in errors if e["type"] in ("extra_forbidden", "invalid_key")]
    if unknown:
        return f"{head}unknown field(s) {unknown}; allowed: {list(model.model_fields)}"
    if not errors[0]["loc"]:
        return f"{head}expected a mapping, got {type(errors[0]['input']).__name__}"
    name = str(errors[0]["loc"][0])
    info = model.model_fields[name]
    # A union field (`list[str] | str`) fails once per member: the deepest error names the bad
    # item (url[1]); errors at the field itself together name every type it takes.
    mine = [e for e in errors if e["loc"][0] == name]
    error = max(mine, key=lambda e: len(_path(e["loc"])))
    loc = error["loc"][:-2] if error["loc"][-1] == "[key]" else error["loc"]  # (field, key, "[key]"): a key failed
    path = (f"{section}." if section else "") + _path(loc)
    value = error["input"]
    if loc != error["loc"]:
        return f"{where}: {path}: keys must be strings, got {value!r}"
    if error["type"] == "missing" or (value is None and info.is_required()):
        return f"{head}missing required field {name!r}"
    if value is None:
        return f"{where}: {path}: must not be null"
    if error["type"] in ("greater_than", "greater_than_equal", "less_than_equal"):
        return f"{where}: {path} must be {_bounds(info.metadata)}, got {value!r}"
    if error["type"] == "literal_error":
        return f"{where}: {path} must be one of {list(get_args(info.annotation))}, got {value!r}"
    if error["type"] == "value_error":
        return f"{where}: {path}: {error.get('ctx', {})['error']}"
    kinds = [_KINDS.get(e["type"], e["msg"]) for e in mine if _path(e["loc"]) == _path(error["loc"])]
    return f"{where}: {path}: expected {' or '.join(kinds)}, got {value!r}"


def _path(loc: tuple[int | str, ...]) -> str:
    """A field and its list indices ("url[1]"); the other parts name the members of a union."""
    return str(loc[0]) + "".join(f"[{part}]" for part in loc[1:] if isinstance(part, int))


def _bounds(metadata: list[Any]) -> str:
    """A field's constraints: ">= 16", "> 0" or "in (0, 1]"."""
    limits = {key: getattr(m, key) for m in metadata for key in ("gt", "ge", "le") if hasattr(m, key)}
    if limits.keys() == {"gt", "le"}:
        return f"in ({limits['gt']}, {limits['le']}]"
    return " and ".join(f"{op} {limits[key]}" for key, op in (("gt", ">"), ("ge", ">="), ("le", "<=")) if key in limits)


def parse_size(text: str) -> int:
    """'96MiB', '8g', '1048576' -> bytes.

    :raises ValueError: not a size.
    """
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"not a size: {text!r} (examples: 96MiB, 8GiB, 1048576)")
    number, unit = float(match.group(1)), match.group(2).lower()
    return int(number * 1024 ** " kmgt".index(unit or " "))


# -- strategy entries: hand-written ---------------------------------------------------------------
#
# Not a pydantic model: the messages say what an entry looks like and name it by its label
# ("strategies[2] (beam-w4): missing field 'n' (a budget or a list of budgets, e.g. [1, 4,
# 16])", "unknown strategy 'beem'; choose from [...]"), where `_message` could only say
# "missing required field 'n'" or "n: expected a list or an int". The options are free-form:
# allowed by name here (the strategy class's fields), checked by the class in plan.py.


_ENTRY_KEYS = ("label", "strategy", "n", "per_n")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _entry(data: Any, where: str) -> StrategyEntry:
    if not isinstance(data, Mapping):
        raise RecipeError(f"{where}: expected a mapping like {{strategy: beam, n: [4, 16], width: 4}}, got {data!r}")

    strategy = data.get("strategy")
    if not isinstance(strategy, str):
        raise RecipeError(f"{where}: missing field 'strategy' (one of {sorted(STRATEGIES)})")
    if strategy not in STRATEGIES:
        raise RecipeError(f"{where}: unknown strategy {strategy!r}; choose from {sorted(STRATEGIES)}")
    cls = STRATEGIES[strategy]
    allowed_options = [f for f in option_fields(cls) if f != "n"]
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
    """What the section models cannot say: fields checked together, and choices whose message
    says more than "one of" (the PRM format presets)."""
    for name, spec in (("policy", recipe.policy), ("prm", recipe.prm)):
        if spec is None:
            continue
        if spec.model is None and not spec.url:
            raise RecipeError(f"{where}: {name}: give model (a path or Hugging Face id) or url (vLLM servers)")
        if spec.model is not None and not spec.model.strip():
            raise RecipeError(f"{where}: {name}.model is empty")
        if spec.data_parallel_size < 1 or (spec.url and spec.data_parallel_size != 1):
            raise RecipeError(
                f"{where}: {name}.data_parallel_size must be >= 1, and only for an in-process "
                "model (servers take vllm serve --data-parallel-size)"
            )
        for url in spec.url:
            if not re.match(r"^https?://", url):
                raise RecipeError(f"{where}: {name}.url {url!r} is not an http(s) URL")
    fmt = None if recipe.prm is None else recipe.prm.format
    if isinstance(fmt, str) and fmt not in PRM_FORMAT_NAMES:
        raise RecipeError(
            f"{where}: prm.format {fmt!r} is not a preset; choose from {list(PRM_FORMAT_NAMES)} "
            "or give {base: preset, step_tag: ..., label_tokens: [good, bad]}"
        )
    d = recipe.dataset
    if d.start < 0 or (d.end is not None and d.end <= d.start):
        raise RecipeError(f"{where}: dataset needs 0 <= start < end, got start={d.start}, end={d.end}")
    if d.source == "toy" and d.end is None:
        raise RecipeError(f"{where}: dataset.source 'toy' needs end (how many toy problems)")


def changed_fields(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Dotted paths whose values differ between two recipe dicts (strategies by label)."""
    return sorted(set(_diff(_normalise_for_diff(old), _normalise_for_diff(new), "")))


def _normalise_for_diff(data: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in data.items() if k != "ray"}  # where a study runs never changes its results
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
