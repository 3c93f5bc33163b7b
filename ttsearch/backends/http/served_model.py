"""What the servers of a role serve, checked against what the client expects.

The client encodes prompts itself (token ids are sent, never text), so it must hold the
server's tokenizer. `inspect_servers` asks every server of a `ReplicaPool` for its model
(GET /v1/models), checks that they all serve the same one (and the one the user named,
if any), loads the tokenizer locally (from `tokenizer`, else the model name, else the
path the server loaded it from), and checks that it encodes a probe text exactly as the
server does (POST /tokenize, where the server has it). A server that does not answer is
marked down; when none answers, or the model or tokenizer does not match, the error says
which server and what it serves.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ttsearch.backends.http.client import MalformedResponseError, ServerRequestError
from ttsearch.backends.http.replicas import AllReplicasDownError, ReplicaPool
from ttsearch.errors import BackendError

__all__ = ["ServedModel", "inspect_servers", "load_tokenizer"]

# Digits, operators, LaTeX, step separators: what math prompts are made of.
_PROBE_TEXT = "Solve 12 + 7 * (3 - 1) = ?\n\nStep 1: \\frac{1}{2} x^2 - 0.5 = 10%.\n\n## Answer: $\\boxed{42}$"


@dataclass(frozen=True, slots=True)
class ServedModel:
    """The model every server of a role serves."""

    name: str  # the served model name (the "model" field of requests)
    root: str | None  # the path or id the server loaded it from
    max_model_len: int  # the smallest over the servers


def load_tokenizer(source: str | os.PathLike[str]) -> Any:
    """A Hugging Face tokenizer from a local folder or a hub id."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(source))
    except (OSError, ValueError) as e:
        raise ValueError(f"could not load a tokenizer from {source!r}: {e}") from e


async def inspect_servers(
    pool: ReplicaPool,
    *,
    model: str | os.PathLike[str] | None = None,
    tokenizer: Any = None,
    probe_extra: str = "",
) -> tuple[ServedModel, Any]:
    """The served model and the local tokenizer for `pool` (see the module docstring).

    `model`: the model the servers must serve (a name, hub id or path; None: whatever they
    serve). `tokenizer`: a tokenizer object or where to load one from (None: `model`, else
    the servers' model). `probe_extra`: text added to the tokenizer probe (e.g. a PRM's
    step tag and labels). Raises ValueError when something does not match,
    `AllReplicasDownError` when no server answers.
    """
    answers = await pool.get_each("/v1/models")
    cards: list[tuple[str, dict[str, Any]]] = []
    for replica, answer in zip(pool.replicas, answers, strict=True):
        if isinstance(answer, BackendError):
            pool.mark_down(replica, f"GET /v1/models failed: {answer}")
            continue
        cards.append((replica.url, _model_card(answer, replica.url)))
    if not cards:
        reasons = "; ".join(f"{r.url} ({r.down})" for r in pool.replicas)
        raise AllReplicasDownError(f"no {pool.role} server answers: {reasons}")

    first_url, first = cards[0]
    for url, card in cards[1:]:
        if (card["id"], card.get("root")) != (first["id"], first.get("root")):
            raise ValueError(
                f"{pool.role} servers serve different models: {first_url} serves {_describe(first)}, "
                f"{url} serves {_describe(card)}"
            )
    if model is not None and not _same_model(str(model), first):
        raise ValueError(
            f"{pool.role} server {first_url} serves {_describe(first)}, not {str(model)!r} "
            "(start it with that model, or pass the model it serves)"
        )
    reported = [card.get("max_model_len") for _, card in cards]
    lengths = [n for n in reported if isinstance(n, int) and n > 0]
    if len(lengths) != len(reported):
        raise ValueError(f"{pool.role} servers do not report max_model_len in /v1/models: {reported}")
    served = ServedModel(name=first["id"], root=first.get("root"), max_model_len=min(lengths))

    if tokenizer is None or isinstance(tokenizer, (str, os.PathLike)):
        source = tokenizer if tokenizer is not None else model if model is not None else served.root or served.name
        tokenizer = load_tokenizer(source)
    await _check_tokenizer(pool, served, tokenizer, _PROBE_TEXT + probe_extra)
    return served, tokenizer


def _model_card(answer: dict[str, Any], url: str) -> dict[str, Any]:
    data = answer.get("data")
    if (
        not isinstance(data, list)
        or not data
        or not isinstance(data[0], dict)
        or not isinstance(data[0].get("id"), str)
    ):
        raise MalformedResponseError(f"{url}/v1/models: no model listed in {str(answer)[:200]}")
    return data[0]


def _describe(card: dict[str, Any]) -> str:
    root = card.get("root")
    return f"{card['id']!r}" + (f" (from {root!r})" if root and root != card["id"] else "")


def _same_model(wanted: str, card: dict[str, Any]) -> bool:
    names = {card["id"], card.get("root")}
    if wanted in names or wanted.rstrip("/") in names:
        return True
    # The same local folder, spelt differently (relative path, symlink, trailing slash).
    wanted_path = Path(wanted).expanduser()
    if not wanted_path.exists():
        return False
    for name in names:
        if isinstance(name, str) and Path(name).expanduser().exists():
            if Path(name).expanduser().resolve() == wanted_path.resolve():
                return True
    return False


async def _check_tokenizer(pool: ReplicaPool, served: ServedModel, tokenizer: Any, probe: str) -> None:
    local = list(tokenizer.encode(probe, add_special_tokens=False))
    payload = {"model": served.name, "prompt": probe, "add_special_tokens": False}
    try:
        answer = await pool.post(None, "/tokenize", payload)
    except ServerRequestError as e:
        if e.status_code in (404, 405):
            return  # a server without /tokenize (an older vLLM, or a proxy): nothing to compare
        raise
    remote = answer.get("tokens")
    if not isinstance(remote, list):
        raise MalformedResponseError(f"{pool.role} server /tokenize answered without 'tokens': {str(answer)[:200]}")
    if remote != local:
        where = next((i for i, (a, b) in enumerate(zip(local, remote)) if a != b), min(len(local), len(remote)))
        raise ValueError(
            f"the local tokenizer does not match the {pool.role} server's ({served.name!r}): a probe text "
            f"encodes to different ids from token {where} on (local {local[where : where + 5]}, server "
            f"{remote[where : where + 5]}); pass the tokenizer of the served model"
        )
