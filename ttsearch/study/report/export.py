"""Search traces as chat-format JSONL for fine-tuning (search as data generation).

One line per distinct (problem, solution text): {"messages": [system?, user, assistant],
"unique_id", "run_id", "answer", "correct", "score"}. The user turn is the problem, the
assistant turn the candidate's solution as generated; the system turn is the system
prompt the policy was given: the recipe's `sampling.system_prompt`, or Meta's Llama 3 math
prompt where the recipe leaves it null (what the runner then uses); none when the manifest
records no recipe. Duplicates (the same solution text for the same problem,
from any run or seed, compared after stripping surrounding whitespace) are written once,
first occurrence wins. Failed problems and empty solutions are skipped.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ttsearch.evaluation.aggregation import candidate_keys
from ttsearch.evaluation.grading import is_equivalent
from ttsearch.evaluation.metrics import GradeCache, Grader
from ttsearch.prompts import LLAMA3_MATH_SYSTEM_PROMPT
from ttsearch.study.load import Experiment


@dataclass(frozen=True, slots=True)
class ExportSummary:
    path: Path
    written: int  # lines written
    duplicates: int  # candidates dropped as duplicates
    incorrect: int  # candidates dropped by correct_only
    skipped: int  # empty solutions (failed problems have none)


def system_prompt(manifest: dict[str, Any]) -> str | None:
    """The system prompt the experiment's policy was given (None: unknown or empty)."""
    recipe = manifest.get("recipe") or {}
    if not isinstance(recipe, dict):
        return None
    sampling = recipe.get("sampling")
    for holder in (recipe, sampling or {}):
        prompt = holder.get("system_prompt") if isinstance(holder, dict) else None
        if isinstance(prompt, str) and prompt:
            return prompt
    if isinstance(sampling, dict) and "system_prompt" in sampling and sampling["system_prompt"] is None:
        # A recipe's null system prompt means Meta's Llama 3 math prompt (experiment.engines).
        return LLAMA3_MATH_SYSTEM_PROMPT
    return None


def export_traces(
    experiment: Experiment,
    out_path: str | Path,
    *,
    correct_only: bool = False,
    grader: Grader | None = None,
) -> ExportSummary:
    """Write the experiment's candidate solutions as chat-format JSONL to `out_path`.

    Candidates without a recorded "correct" are graded against the gold answer, once per
    distinct canonical answer (`grader`, default `grading.is_equivalent`).
    """
    cache = GradeCache(grader if grader is not None else is_equivalent)
    system = system_prompt(experiment.manifest)
    seen: set[tuple[str, str]] = set()
    written = duplicates = incorrect = skipped = 0
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for run in experiment.runs:
            for r in run.records:
                if r.get("error") is not None:
                    continue
                gold, uid = str(r["gold"]), str(r["unique_id"])
                answers = [c.get("answer") for c in r["candidates"]]
                keys = candidate_keys(answers)
                for c, answer, key in zip(r["candidates"], answers, keys):
                    text = str(c.get("text") or "")
                    if not text.strip():
                        skipped += 1
                        continue
                    if "correct" in c:
                        correct = bool(c["correct"])
                    else:
                        correct = answer is not None and key is not None and cache.grade(gold, key, answer)
                    if correct_only and not correct:
                        incorrect += 1
                        continue
                    if (uid, text.strip()) in seen:
                        duplicates += 1
                        continue
                    seen.add((uid, text.strip()))
                    messages = [{"role": "system", "content": system}] if system else []
                    messages += [
                        {"role": "user", "content": str(r.get("problem", ""))},
                        {"role": "assistant", "content": text},
                    ]
                    line = {
                        "messages": messages,
                        "unique_id": uid,
                        "run_id": run.spec.run_id,
                        "answer": answer,
                        "correct": correct,
                        "score": c.get("score"),
                    }
                    f.write(json.dumps(line, ensure_ascii=False) + "\n")
                    written += 1
    os.replace(tmp, out)
    return ExportSummary(path=out, written=written, duplicates=duplicates, incorrect=incorrect, skipped=skipped)
