"""Sequential revisions on the toy world: the reviser's prompt and its training trajectories.

A revision model (arXiv 2408.03314, section 6) writes its next attempt at a problem with
its previous attempts in context. Its prompt is the plain policy's chat with the previous
attempts as finished assistant turns (`ttsearch.backends.chat.encode_revision_prompt`),
keeping the last `MAX_PREVIOUS_ATTEMPTS`, as the paper does at inference.

Its training data follow the paper: a trajectory is up to 4 of the policy's own wrong
attempts at a problem followed by a correct solution, the wrong ones chosen closest to the
correct one in character edit distance and ordered so that the closest comes last; the
loss is on the final turn only (`encode_trajectory`). The trainer is
`tools/toy_train_reviser.py`; the model ships in `TOY_REVISER_DIR`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ttsearch.backends.chat import encode_revision_prompt
from ttsearch.toy import TOY_ASSETS_DIR
from ttsearch.toy.tokenizer import TOY_SYSTEM_PROMPT

__all__ = [
    "IGNORE_INDEX",
    "MAX_PREVIOUS_ATTEMPTS",
    "TOY_REVISER_DIR",
    "RevisionTrajectory",
    "closest_last",
    "edit_distance",
    "encode_toy_revision_prompt",
    "encode_trajectory",
    "make_trajectory",
]

TOY_REVISER_DIR = TOY_ASSETS_DIR / "reviser"
# The paper keeps the last 4 attempts in context (and trains on up to 4 wrong ones).
MAX_PREVIOUS_ATTEMPTS = 4
IGNORE_INDEX = -100  # label of a position without loss (PyTorch's cross-entropy default)


def edit_distance(a: str, b: str) -> int:
    """Character-level Levenshtein distance (unit-cost insertions, deletions, substitutions).

    The classic row-by-row dynamic programme, each row in numpy: a row's insertions chain
    along it, and `min_k<=j (t[k] + j - k)` is a running minimum of `t - j`. Toy solutions
    are ~400 characters, so a pure-Python double loop (~50 ms a pair) would dominate the
    trajectory builder's time.
    """
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return len(a)
    b_codes = np.array([ord(c) for c in b], dtype=np.int64)
    columns = np.arange(len(b) + 1, dtype=np.int64)
    row = columns.copy()  # distances from a[:0] to every prefix of b
    step = np.empty_like(row)
    for i, char in enumerate(a, start=1):
        step[0] = i
        # Deletion (from the row above) or match / substitution (from the diagonal).
        np.minimum(row[1:] + 1, row[:-1] + (b_codes != ord(char)), out=step[1:])
        # Insertions: row[j] = min(step[j], row[j-1] + 1), unrolled into a running minimum.
        row = np.minimum.accumulate(step - columns) + columns
    return int(row[-1])


def closest_last(attempts: Sequence[str], target: str, k: int) -> list[str]:
    """The `k` distinct `attempts` closest to `target` in edit distance, ordered from the
    farthest to the closest (the paper's order: the closest wrong attempt comes last, right
    before the correct one). Ties keep the attempts' order; fewer when fewer are distinct.

    :raises ValueError: on a negative `k`.
    """
    if k < 0:
        raise ValueError(f"k must be non-negative, got {k}")
    distinct = list(dict.fromkeys(attempts))  # repeating an attempt tells the model nothing new
    distances = {text: edit_distance(text, target) for text in distinct}
    closest = sorted(distinct, key=lambda text: distances[text])[:k]  # stable: ties keep order
    return closest[::-1]


@dataclass(frozen=True, slots=True)
class RevisionTrajectory:
    """One training sequence of the reviser: a problem, previous attempts, the target."""

    problem: str  # the problem text (the user turn)
    previous: tuple[str, ...]  # wrong attempts, oldest first (the closest to `target` last)
    target: str  # the correct solution the model learns to write next

    def keep_last(self, k: int) -> RevisionTrajectory:
        """The same trajectory with only the last `k` previous attempts (all when fewer):
        from `make_trajectory`'s order these are the `k` closest to the target."""
        if k < 0:
            raise ValueError(f"k must be non-negative, got {k}")
        return RevisionTrajectory(self.problem, self.previous[max(0, len(self.previous) - k) :], self.target)


def make_trajectory(problem: str, wrong_attempts: Sequence[str], target: str, n_previous: int) -> RevisionTrajectory:
    """A trajectory with (up to) `n_previous` of `wrong_attempts` before `target`, chosen
    and ordered by `closest_last`; `n_previous` is capped at `MAX_PREVIOUS_ATTEMPTS`.

    :raises ValueError: when an attempt in context would equal the target (it would teach
        the model to copy, not to revise).
    """
    previous = closest_last(wrong_attempts, target, min(n_previous, MAX_PREVIOUS_ATTEMPTS))
    if target in previous:
        raise ValueError("a previous attempt equals the target: pass wrong attempts only")
    return RevisionTrajectory(problem=problem, previous=tuple(previous), target=target)


def encode_toy_revision_prompt(tokenizer: Any, problem: str, previous_attempts: Sequence[str]) -> list[int]:
    """The toy reviser's prompt: the toy policy's chat (toy system prompt, the tokenizer's
    template) with the last `MAX_PREVIOUS_ATTEMPTS` of `previous_attempts` in context."""
    kept = list(previous_attempts)[-MAX_PREVIOUS_ATTEMPTS:]
    return encode_revision_prompt(tokenizer, problem, kept, system_prompt=TOY_SYSTEM_PROMPT, chat_format="tokenizer")


def encode_trajectory(tokenizer: Any, trajectory: RevisionTrajectory) -> tuple[list[int], list[int]]:
    """(input ids, labels) of a trajectory: the revision prompt, then the target and the end
    of turn; the labels are `IGNORE_INDEX` everywhere but on the target and its end of turn,
    so the model learns to write the correct attempt, not to imitate the wrong ones."""
    prompt = encode_toy_revision_prompt(tokenizer, trajectory.problem, trajectory.previous)
    target = list(tokenizer.encode(trajectory.target, add_special_tokens=False)) + [tokenizer.eos_token_id]
    return prompt + target, [IGNORE_INDEX] * len(prompt) + target
