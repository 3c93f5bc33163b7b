"""Everything a recipe needs, checked before any engine starts (engines take minutes to
start on a GPU; a typo should cost a second): the models exist, the PRM format's tags and
labels are single tokens of the PRM's tokenizer, the dataset reads, the strategies build.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from ttsearch.backends.chat import PromptFormat
from ttsearch.backends.prm_formats import PRM_FORMATS, PrmEncoder, PrmFormat
from ttsearch.errors import DatasetError, RecipeError
from ttsearch.evaluation.datasets import Problem, load_math500
from ttsearch.prompts import LLAMA3_MATH_SYSTEM_PROMPT, REVISION_INSTRUCTION
from ttsearch.study.plan import PlannedRun, plan_runs
from ttsearch.study.recipe import ModelSpec, Recipe
from ttsearch.toy import TOY_ASSETS_DIR
from ttsearch.toy.backends import TOY_PRM_FORMAT
from ttsearch.toy.task import HELD_OUT_SEED, make_problems

__all__ = [
    "Prepared",
    "check_model_path",
    "model_location",
    "parse_shard",
    "policy_prompt_options",
    "prepare",
    "prm_format",
    "select_problems",
    "tokenizer_location",
]

# Fields of a PrmFormat a recipe may set on top of a preset (`prm.format: {base: ...}`).
_FORMAT_FIELDS = (
    "step_tag",
    "step_joiner",
    "question_joiner",
    "system_prompt",
    "label_tokens",
    "positive_label",
    "outcome_only",
    "add_special_tokens",
)


@dataclass(frozen=True)
class Prepared:
    """A validated recipe, ready to run."""

    recipe: Recipe
    runs: list[PlannedRun]
    problems: list[Problem]  # this shard's problems, in dataset order
    policy_model: str | None  # resolved local path or hub id (None: servers)
    prm_model: str | None
    prm_format: PrmFormat | None
    policy_tokenizer: str | None = None  # resolved `policy.tokenizer` (None: the model's own)
    prm_tokenizer: str | None = None


def prepare(recipe: Recipe, *, shard: tuple[int, int] | None = None) -> Prepared:
    """Validate everything that can be checked without an engine.

    :raises RecipeError: the first problem found, naming the field.
    """
    runs = plan_runs(recipe)
    needs_prm = any(r.strategy.needs_verifier for r in runs)
    policy_model = model_location(recipe, recipe.policy, "policy")
    policy_tokenizer = tokenizer_location(recipe, recipe.policy, "policy")
    prm_model = prm_tokenizer = fmt = None
    if recipe.prm is not None and needs_prm:
        prm_model = model_location(recipe, recipe.prm, "prm")
        prm_tokenizer = tokenizer_location(recipe, recipe.prm, "prm")
        fmt = prm_format(recipe.prm.format)
        _check_format_tokens(recipe, fmt, prm_tokenizer or prm_model)
    if any(r.strategy.requires_revision_prompts() for r in runs):
        _check_revision_prompts(recipe, policy_tokenizer or policy_model)
    problems = select_problems(recipe, shard=shard)
    return Prepared(recipe, runs, problems, policy_model, prm_model, fmt, policy_tokenizer, prm_tokenizer)


def policy_prompt_options(recipe: Recipe) -> dict[str, Any]:
    """How the policy renders its prompts (`VLLMPolicy` / `OpenAIPolicy` keyword arguments)."""
    system_prompt, instruction = recipe.sampling.system_prompt, recipe.sampling.revision_instruction
    return {
        "system_prompt": LLAMA3_MATH_SYSTEM_PROMPT if system_prompt is None else system_prompt,
        "chat_format": "tokenizer" if recipe.policy.chat_format == "tokenizer" else None,
        "date_string": recipe.policy.date_string,
        "revision_instruction": REVISION_INSTRUCTION if instruction == "default" else instruction,
    }


def model_location(recipe: Recipe, spec: ModelSpec, role: str) -> str | None:
    """The model as the engine will load it: the shipped toy model, a local directory
    (checked to exist and hold a config.json), or a Hugging Face id (left to the hub)."""
    if spec.url:
        return spec.model
    assert spec.model is not None
    if spec.model == "toy" or (spec.model == "toy-reviser" and role == "policy"):
        # "toy-reviser": the toy policy fine-tuned to revise (recipes/toy-revisions.yaml)
        name = {"toy-reviser": "reviser"}.get(spec.model, "policy" if role == "policy" else "prm")
        path = TOY_ASSETS_DIR / name
        if not (path / "config.json").is_file():
            raise RecipeError(f"{role}.model {spec.model!r}: the toy models are not shipped at {path}")
        return str(path)
    return check_model_path(spec.model, f"{role}.model", recipe.base_dir)


def check_model_path(value: str, what: str, base_dir: Path = Path(".")) -> str:
    """A local model directory (it must exist and hold a config.json), or a Hugging Face
    id (anything else that does not look like a path: left to the hub)."""
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    if value.startswith(("/", ".", "~")) or path.exists():
        if not path.is_dir():
            raise RecipeError(f"{what}: no such model directory: {path}")
        if not (path / "config.json").is_file():
            raise RecipeError(f"{what}: {path} is not a model directory (it has no config.json)")
        return str(path)
    return value  # a Hugging Face id: downloaded (or read from the hub cache) by vLLM


def tokenizer_location(recipe: Recipe, spec: ModelSpec, role: str) -> str | None:
    """`tokenizer` as the engine will load it: None (the model's own), a local directory
    (relative to the recipe file; checked to exist), or a Hugging Face id."""
    if spec.tokenizer is None:
        return None
    value = spec.tokenizer
    path = recipe.resolve_path(value)
    if value.startswith(("/", ".", "~")) or path.exists():
        if not path.is_dir():
            raise RecipeError(f"{role}.tokenizer: no such tokenizer directory: {path}")
        return str(path)
    return value


def prm_format(value: str | dict[str, Any]) -> PrmFormat:
    """A PRM format from the recipe: a preset name or {base: preset, field: value, ...}."""
    presets = PRM_FORMATS
    if isinstance(value, str):
        if value == "toy":
            return TOY_PRM_FORMAT
        return presets[value]
    data = dict(value)
    base = data.pop("base", None)
    if base not in presets:
        raise RecipeError(f"prm.format.base must be one of {sorted(presets)}, got {base!r}")
    unknown = [k for k in data if k not in _FORMAT_FIELDS]
    if unknown:
        raise RecipeError(f"prm.format: unknown field(s) {unknown}; allowed: {['base', *_FORMAT_FIELDS]}")
    if "label_tokens" in data:
        labels = data["label_tokens"]
        if not isinstance(labels, list) or len(labels) != 2 or not all(isinstance(t, str) for t in labels):
            raise RecipeError(f"prm.format.label_tokens must be two strings [good, bad], got {labels!r}")
        data["label_tokens"] = tuple(labels)
    types = {f.name: f.type for f in fields(PrmFormat)}
    for key, v in data.items():
        if "bool" in str(types[key]) and not isinstance(v, bool):
            raise RecipeError(f"prm.format.{key} must be true/false, got {v!r}")
        if str(types[key]) == "str" and not isinstance(v, str):
            raise RecipeError(f"prm.format.{key} must be a string, got {v!r}")
    try:
        return replace(presets[base], **data)
    except (TypeError, ValueError) as error:
        raise RecipeError(f"prm.format: {error}") from None


def _load_tokenizer(recipe: Recipe, source: str, section: str, what: str) -> tuple[Any, str]:
    """The tokenizer at `source` (a resolved tokenizer or model: a path relative to the
    recipe, or a hub id) and where it was loaded from; a RecipeError naming `section`."""
    local = recipe.resolve_path(source)
    tokenizer_path = str(local) if local.exists() else source
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(tokenizer_path), tokenizer_path
    except Exception as error:
        raise RecipeError(f"{section}: cannot load {what} from {tokenizer_path!r}: {error}") from None


def _check_revision_prompts(recipe: Recipe, source: str | None) -> None:
    """A run that revises needs revision prompts the policy's tokenizer can render (earlier
    attempts as assistant turns: some chat templates refuse two in a row): one is rendered
    here, with two placeholder attempts, before any engine starts."""
    instruction = recipe.sampling.revision_instruction
    if instruction is not None and not instruction.strip():
        raise RecipeError("sampling.revision_instruction is empty: give its text, or leave it out for none")
    if source is None:  # servers without a named model: their tokenizer is only known on connect
        return
    tokenizer, tokenizer_path = _load_tokenizer(recipe, source, "policy", "the policy tokenizer")
    try:
        prompts = PromptFormat(**policy_prompt_options(recipe))
        prompts.revision(tokenizer, "What is 1 + 1?", ["First attempt.", "Second attempt."])
    except Exception as error:
        hint = (
            " (a template that needs user and assistant turns to alternate: set sampling.revision_instruction)"
            if instruction is None
            else ""
        )
        raise RecipeError(
            f"policy: the revisions strategy cannot render its prompts with the policy's tokenizer "
            f"({tokenizer_path}, chat_format {recipe.policy.chat_format!r}): {error}{hint}"
        ) from None


def _check_format_tokens(recipe: Recipe, fmt: PrmFormat, source: str | None) -> None:
    """The step tag and the label tokens must each be one token of the PRM's tokenizer
    (`source`: its resolved tokenizer or model): a score is read at one position, as
    P(good) vs P(bad) of one token each."""
    assert recipe.prm is not None
    if source is None:  # servers without a named model: their tokenizer is checked on connect
        return
    tokenizer, tokenizer_path = _load_tokenizer(recipe, source, "prm", "the PRM tokenizer")
    try:
        encoder = PrmEncoder(fmt, tokenizer)
    except ValueError as error:
        raise RecipeError(f"prm.format: {error} (tokenizer {tokenizer_path})") from None
    if fmt.layout in ("tagged", "assistant_tags"):
        ids = tokenizer.encode(fmt.step_tag, add_special_tokens=False)
        after_text = encoder._anchor_after_cut  # the tag's ids where it follows a step
        if len(ids) != 1 and len(after_text) != 1:
            raise RecipeError(
                f"prm.format.step_tag {fmt.step_tag!r} is not a single token of the PRM's tokenizer "
                f"({tokenizer_path}): it encodes to {ids}"
            )


def select_problems(recipe: Recipe, *, shard: tuple[int, int] | None = None) -> list[Problem]:
    """The recipe's problems: [start, end) of the dataset, then a seeded sample, then this
    shard's slice (problem i of the selection goes to shard i mod k)."""
    d = recipe.dataset
    if d.source == "toy":
        assert d.end is not None
        problems = make_problems(d.end, seed=HELD_OUT_SEED if d.toy_seed is None else d.toy_seed)[d.start :]
    else:
        local = recipe.resolve_path(d.source)
        source: str | Path = local if (local.exists() or d.source.endswith((".jsonl", ".json"))) else d.source
        try:
            problems = load_math500(source, limit=d.end)[d.start :]
        except DatasetError as error:
            raise RecipeError(f"dataset: {error}") from None
        except ImportError as error:
            raise RecipeError(f"dataset.source {d.source!r}: {error}") from None
        except Exception as error:
            raise RecipeError(
                f"dataset.source {d.source!r} could not be read: {type(error).__name__}: {error}"
            ) from None
    if not problems:
        raise RecipeError(f"dataset: no problems in [start={d.start}, end={d.end}) of {d.source}")
    if d.sample is not None:
        if d.sample > len(problems):
            raise RecipeError(f"dataset.sample {d.sample} is more than the {len(problems)} problems selected")
        chosen = sorted(random.Random(d.sample_seed).sample(range(len(problems)), d.sample))
        problems = [problems[i] for i in chosen]
    if shard is not None:
        index, count = shard
        if not problems[index::count]:
            raise RecipeError(f"shard {index}/{count} has no problems (only {len(problems)} selected)")
        problems = problems[index::count]
    return problems


def parse_shard(text: str) -> tuple[int, int]:
    """'i/k' -> (i, k) with 0 <= i < k."""
    left, sep, right = text.partition("/")
    if not sep or not left.strip().isdigit() or not right.strip().isdigit():
        raise RecipeError(f"--shard {text!r}: expected i/k, e.g. 0/4 (shard 0 of 4)")
    index, count = int(left), int(right)
    if count < 1 or not 0 <= index < count:
        raise RecipeError(f"--shard {text!r}: need 0 <= i < k")
    return index, count
