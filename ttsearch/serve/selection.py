"""Which candidate a response shows (and the live view highlights): the selected one."""

from __future__ import annotations

from ttsearch.core.results import SearchResult
from ttsearch.evaluation.aggregation import candidate_keys, select_answer

__all__ = ["selected_index"]


def selected_index(result: SearchResult) -> int | None:
    """The candidate the response shows: the best scored of the selected answer's group
    (the first, where scores tie or there are none); with no answer at all, the best
    scored candidate; None without candidates."""
    candidates = result.candidates
    if not candidates:
        return None
    answers = [c.answer for c in candidates]
    chosen = None
    if any(a is not None for a in answers):
        rewards = None if result.selection == "majority" else [c.score for c in candidates]
        chosen = select_answer(result.selection, answers, rewards)
    keys = candidate_keys(answers)
    group = [i for i, key in enumerate(keys) if chosen is None or key == chosen.key]
    return max(group, key=lambda i: (candidates[i].score, -i))
