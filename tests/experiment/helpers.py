"""Recipes and scripted worlds for experiment tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from ttsearch.testing.scripted import EOS, ScriptCall, ScriptedPolicy, ScriptedVerifier

PROBLEMS = [
    {"problem": f"What is {i}+{i}?", "answer": str(2 * i), "level": 1 + i % 5, "unique_id": f"p{i}"} for i in range(6)
]


def write_dataset(path: Path, problems: list[dict[str, Any]] = PROBLEMS) -> Path:
    path.write_text("".join(json.dumps(p) + "\n" for p in problems), encoding="utf-8")
    return path


def script(call: ScriptCall) -> str:
    """Two steps, then the answer: right for even problems; for odd ones only sample 0 is."""
    a = int(call.problem.removeprefix("What is ").split("+")[0])
    right = 2 * a
    answer = right + 1 if a % 2 and call.index else right
    steps = call.text.count("\n\n")
    if steps < 2 and call.request.stop:
        return f"step {steps} [p={0.9 if answer == right else 0.4}]\n\n"
    return f"\\boxed{{{answer}}} [p={0.9 if answer == right else 0.4}]{EOS}"


def scripted_backends() -> tuple[ScriptedPolicy, ScriptedVerifier]:
    return ScriptedPolicy(script), ScriptedVerifier()


def recipe_data(dataset_path: Path, tokenizer_dir: Path, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "scripted",
        "policy": {"model": "scripted/policy"},
        "prm": {"model": "scripted/prm", "tokenizer": str(tokenizer_dir), "format": "rlhflow"},
        "dataset": {"source": str(dataset_path)},
        "sampling": {"temperature": 0.8, "max_tokens": 256},
        "strategies": [
            {"strategy": "majority", "n": [1, 2, 4]},
            {"strategy": "best_of_n", "n": [1, 2, 4]},
            {"strategy": "beam", "n": [2, 4], "width": 2},
        ],
        "seeds": [0, 1],
    }
    data.update(changes)
    return data


def write_recipe(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path
