"""Pure helpers shared by every policy backend (in-process vLLM and vLLM servers over HTTP).

They turn a `SampleRequest` into the settings vLLM gets and a vLLM completion back into a
`Sample`, so both backends send the same requests and read the same outputs:

  * `validate_request`: the checks a request passes before anything is sent.
  * `engine_seed`: with n > 1 and a seed, vLLM gives completion i the seed `seed + i`
    (`v1/engine/parallel_sampling.py`): distinct within a request, but two requests with
    seeds s and s + 1 would share streams. We therefore scramble the caller's seed first.
  * `finish_reason`: vLLM's (finish_reason, stop_reason) as "step" / "eos" / "length".
  * `align_ids_with_text`: a stop string may end inside a token (Llama 3 has "\\n\\n\\n",
    "?\\n\\n\\n", ...): vLLM cuts the text at the end of the stop string but keeps the whole
    token. We replace that last token by the encoding of its kept part, so `token_ids`
    always decode to `text`.

No vLLM import here: the HTTP client backends use this module without vLLM installed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from ttsearch.core.backend import FinishReason, SampleRequest
from ttsearch.errors import PromptTooLongError

__all__ = ["align_ids_with_text", "engine_seed", "eos_token_ids", "finish_reason", "validate_request"]

logger = logging.getLogger(__name__)

_SEED_SPACE = 1 << 62  # scrambled seeds land in [0, 2**62); vLLM adds the completion index


def engine_seed(seed: int) -> int:
    """The vLLM seed used for a request seeded with `seed` (a fixed splitmix64 scramble), so
    that requests with nearby seeds do not share random streams (vLLM uses seed + i for
    completion i)."""
    z = (seed + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) % _SEED_SPACE


def validate_request(request: SampleRequest) -> None:
    """Raise ValueError naming what is wrong with `request`."""
    if not request.prompt_token_ids:
        raise ValueError("empty prompt: prompt_token_ids must hold at least one token")
    if request.n < 1:
        raise ValueError(f"n must be >= 1, got {request.n}")
    if request.max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {request.max_tokens}")
    if request.temperature < 0.0:
        raise ValueError(f"temperature must be >= 0, got {request.temperature}")
    if not 0.0 < request.top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {request.top_p}")
    if any(not s for s in request.stop):
        raise ValueError(f"stop strings must be non-empty, got {request.stop!r}")


def eos_token_ids(*values: Any) -> frozenset[int]:
    """The token ids in `values` (each an id, a list of ids, or None), e.g. the tokenizer's
    `eos_token_id` and the model config's `eos_token_id` list."""
    ids: set[int] = set()
    for value in values:
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, Sequence):
            ids.update(v for v in value if isinstance(v, int))
    return frozenset(ids)


def finish_reason(
    reason: Any, stop_reason: Any, token_ids: Sequence[int], eos_ids: Iterable[int]
) -> FinishReason | None:
    """vLLM's finish_reason / stop_reason of a completion as a `FinishReason` (None when
    vLLM reports something else, e.g. "abort": the caller names the error)."""
    if reason == "stop":
        # A str stop_reason is the stop string; None is the EOS token; an int is a
        # stop token id (e.g. <|eot_id|> from generation_config's eos_token_id list).
        return "step" if isinstance(stop_reason, str) else "eos"
    if reason == "length":
        # Older vLLM v1 checked the length limit before EOS: an EOS sampled as the last
        # allowed token was reported as "length".
        if token_ids and token_ids[-1] in frozenset(eos_ids):
            return "eos"
        return "length"
    return None


def align_ids_with_text(tokenizer: Any, token_ids: tuple[int, ...], text: str) -> tuple[int, ...]:
    """Make the ids of a "step" completion end where its text ends, when the stop string
    ended inside the last token (vLLM keeps the whole token but cuts the text after the
    stop string). That happens with tokens like "?\\n\\n\\n", and when the stop straddles
    two tokens ("-----\\n" + "\\n\\n" keeps only one "\\n" of the last)."""
    if not token_ids:
        return token_ids
    decoded = tokenizer.decode(list(token_ids), skip_special_tokens=True)
    if decoded == text:
        return token_ids
    extra = decoded[len(text) :]
    last = tokenizer.decode(list(token_ids[-1:]), skip_special_tokens=True)
    if decoded.startswith(text) and last.endswith(extra):
        kept = last[: len(last) - len(extra)]
        return token_ids[:-1] + tuple(tokenizer.encode(kept, add_special_tokens=False))
    # Detokenizers can disagree on odd byte sequences (partial UTF-8); keep vLLM's ids.
    logger.debug("could not align ids with text %r (decoded %r)", text[-20:], decoded[-20:])
    return token_ids


def check_prompt_fits(request: SampleRequest, max_model_len: int) -> None:
    """Refuse a request whose prompt + max_tokens exceeds the model's context, before it
    is sent (both policies: in-process and servers)."""
    prompt_len = len(request.prompt_token_ids)
    if prompt_len + request.max_tokens > max_model_len:
        raise PromptTooLongError(
            f"prompt of {prompt_len} tokens + max_tokens {request.max_tokens} = "
            f"{prompt_len + request.max_tokens} tokens exceeds the model's "
            f"max_model_len of {max_model_len}"
        )
