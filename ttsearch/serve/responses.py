"""A finished search as OpenAI response bodies: a completion, or the chunks of a stream.

The message (or text) is the selected solution: among the candidates whose answer the
strategy's selection picked, the best scored (plain sampling: every sample is a choice).
The extension field `search` carries what a search adds: every candidate with its answer
and scores, the selected one's index, the strategy and its options, the seed, the full
compute (`usage` in `SearchResult` terms), where the live view shows its tree (`tree`).
`usage` is the API's, plus the PRM's tokens. Streams send the same objects as chunks; progress chunks carry `search.progress` and an
empty delta, so clients that only read `delta.content` see just the answer.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from typing import Any

from ttsearch.core.results import Candidate, selected_index
from ttsearch.serve.protocol import Endpoint
from ttsearch.serve.service import SearchOutcome

__all__ = [
    "ResponseIds",
    "completion_body",
    "final_chunks",
    "progress_chunk",
    "role_chunk",
    "selected_index",
    "tree_links",
]

_FINISH = {"eos": "stop", "length": "length"}  # a candidate's finish as the API names it


@dataclasses.dataclass(frozen=True, slots=True)
class ResponseIds:
    """What every chunk of one response repeats."""

    endpoint: Endpoint
    model: str
    id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)
    created: int = dataclasses.field(default_factory=lambda: int(time.time()))

    def head(self, *, chunk: bool) -> dict[str, Any]:
        if self.endpoint == "chat":
            prefix, kind = "chatcmpl-", "chat.completion.chunk" if chunk else "chat.completion"
        else:
            prefix, kind = "cmpl-", "text_completion"
        return {"id": prefix + self.id, "object": kind, "created": self.created, "model": self.model}


def completion_body(ids: ResponseIds, outcome: SearchOutcome) -> dict[str, Any]:
    """The whole (non-streamed) response."""
    return {
        **ids.head(chunk=False),
        "choices": [_choice(ids.endpoint, i, c) for i, c in enumerate(_shown(outcome))]
        or [_empty_choice(ids.endpoint)],
        "usage": usage_body(outcome),
        "search": search_body(outcome),
    }


def role_chunk(ids: ResponseIds) -> dict[str, Any]:
    """The first chunk of a chat stream (the assistant's role), sent before the search ends."""
    return _chunk(ids, [_delta(ids.endpoint, 0, {"role": "assistant", "content": ""}, None)])


def progress_chunk(ids: ResponseIds, progress: dict[str, Any]) -> dict[str, Any]:
    """A progress event: an empty delta and `search.progress`."""
    return {**_chunk(ids, [_delta(ids.endpoint, 0, {}, None)]), "search": {"progress": progress}}


def final_chunks(ids: ResponseIds, outcome: SearchOutcome, *, include_usage: bool) -> list[dict[str, Any]]:
    """The answer: each choice's text, then its finish (the last one with `search`), then
    `usage` when the client asked for it (`stream_options.include_usage`)."""
    shown = _shown(outcome)
    chunks = [_chunk(ids, [_delta(ids.endpoint, i, {"content": c.text}, None)]) for i, c in enumerate(shown)]
    for i, c in enumerate(shown):
        chunks.append(_chunk(ids, [_delta(ids.endpoint, i, {}, _FINISH[c.finish])]))
    if not shown:  # nothing to show: one empty, cut-off choice, as the whole response has
        chunks.append(_chunk(ids, [_delta(ids.endpoint, 0, {}, "length")]))
    chunks[-1]["search"] = search_body(outcome)
    if include_usage:
        chunks.append({**_chunk(ids, []), "usage": usage_body(outcome)})
    return chunks


def usage_body(outcome: SearchOutcome) -> dict[str, Any]:
    """The API's usage (completion tokens: everything the search generated) plus the PRM's."""
    usage = outcome.result.usage
    prompt = outcome.plan.prompt_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": usage.generated_tokens,
        "total_tokens": prompt + usage.generated_tokens,
        "prm_tokens": usage.verifier_tokens,
        "prm_computed_tokens": usage.verifier_computed_tokens,
        "prm_cached_tokens": usage.verifier_cached_tokens,
    }


def search_body(outcome: SearchOutcome) -> dict[str, Any]:
    result, plan = outcome.result, outcome.plan
    return {
        "strategy": result.strategy,
        "options": plan.strategy.options(),
        "seed": plan.seed,
        "answer": result.answer,
        "selection": result.selection,
        "selected": None if plan.plain_sampling else selected_index(result),
        "candidates": [_candidate(c) for c in result.candidates],
        "usage": dataclasses.asdict(result.usage),
        "queue_seconds": round(outcome.queue_seconds, 4),
        "tree": None if outcome.tree_id is None else tree_links(outcome.tree_id),
    }


def tree_links(tree_id: str) -> dict[str, str]:
    """Where a request's search tree is: its JSON, and the live view's page opening it
    (paths on this server; the server does not know the address clients reach it by)."""
    return {"id": tree_id, "url": f"/v1/trees/{tree_id}", "view": f"/?tree={tree_id}"}


def _shown(outcome: SearchOutcome) -> list[Candidate]:
    """The candidates the choices show: every sample for plain sampling, else the selected one."""
    result = outcome.result
    if outcome.plan.plain_sampling:
        return list(result.candidates)
    index = selected_index(result)
    return [] if index is None else [result.candidates[index]]


def _choice(endpoint: Endpoint, index: int, candidate: Candidate) -> dict[str, Any]:
    finish = _FINISH[candidate.finish]
    if endpoint == "chat":
        message = {"role": "assistant", "content": candidate.text}
        return {"index": index, "message": message, "finish_reason": finish, "logprobs": None}
    return {"index": index, "text": candidate.text, "finish_reason": finish, "logprobs": None}


def _empty_choice(endpoint: Endpoint) -> dict[str, Any]:
    """The one choice of a search that ended without a candidate (every one was dropped)."""
    if endpoint == "chat":
        return {
            "index": 0,
            "message": {"role": "assistant", "content": ""},
            "finish_reason": "length",
            "logprobs": None,
        }
    return {"index": 0, "text": "", "finish_reason": "length", "logprobs": None}


def _delta(endpoint: Endpoint, index: int, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    if endpoint == "chat":
        return {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}
    return {"index": index, "text": delta.get("content", ""), "finish_reason": finish, "logprobs": None}


def _chunk(ids: ResponseIds, choices: list[dict[str, Any]]) -> dict[str, Any]:
    return {**ids.head(chunk=True), "choices": choices}


def _candidate(c: Candidate) -> dict[str, Any]:
    return {
        "text": c.text,
        "answer": c.answer,
        "score": c.score,
        "step_scores": list(c.step_scores),
        "finish": c.finish,
        "tokens": c.num_tokens,
    }
