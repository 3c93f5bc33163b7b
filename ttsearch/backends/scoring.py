"""PRM scoring shared by both backend families (in-process vLLM and vLLM servers): the
scorer modes, turning label log probabilities or pooled rows into scores in [0, 1], the
input-length check, what scoring requests cost, and running one call's requests side by
side."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeVar

from ttsearch.backends.prm_formats import PrmEncoder, PrmFormat
from ttsearch.errors import BackendError, PromptTooLongError

__all__ = [
    "PrmScoring",
    "ScorerMode",
    "ScoringCost",
    "clamp_score",
    "gather_or_cancel",
    "resolve_mode",
    "two_way_probability",
]

ScorerMode = Literal["auto", "generative", "pooling"]

T = TypeVar("T")


def resolve_mode(fmt: PrmFormat, mode: ScorerMode = "auto") -> Literal["generative", "pooling"]:
    """The concrete scorer for `fmt`: "auto" is "pooling" (one pass per candidate that
    reads the prefix cache: the fewest computed tokens and requests for every format).
    `VLLMVerifier` wrapping a generation engine it was given, and `OpenAIVerifier`,
    resolve "auto" to "generative" for LM-head formats instead."""
    if mode == "auto":
        return "pooling"
    if mode == "generative":
        if fmt.head != "lm":
            raise ValueError("mode 'generative' needs a format whose score comes from LM-head label tokens")
        return mode
    if mode == "pooling":
        return mode
    raise ValueError(f"unknown scorer mode {mode!r}; use 'auto', 'generative' or 'pooling'")


@dataclass(frozen=True, slots=True)
class ScoringCost:
    """What scoring requests cost (summed with +)."""

    prompt_tokens: int = 0  # tokens sent
    cached_tokens: int = 0  # of those, read from the prefix cache
    requests: int = 0

    def __add__(self, other: ScoringCost) -> ScoringCost:
        return ScoringCost(
            self.prompt_tokens + other.prompt_tokens,
            self.cached_tokens + other.cached_tokens,
            self.requests + other.requests,
        )

    @classmethod
    def memo_hit(cls, tokens: int) -> ScoringCost:
        """An input whose scores all came from the memo: no request, and its tokens count as
        sent and read from a cache. An experiment runs many searches through one verifier,
        and searches with the same seeds share their first samples: counting a memo hit as
        free would make a run's PRM tokens depend on which runs went before it."""
        return cls(tokens, tokens, 0)


def two_way_probability(lp_good: float, lp_bad: float, request_id: str) -> float:
    """P(good) / (P(good) + P(bad)) from the two log probabilities, without overflow."""
    d = lp_bad - lp_good
    if math.isnan(d):
        raise BackendError(f"PRM request {request_id} returned NaN label log probabilities")
    if d == -math.inf:
        return 1.0
    if d == math.inf:
        return 0.0
    if d > 0:
        e = math.exp(-d)
        return e / (1.0 + e)
    return 1.0 / (1.0 + math.exp(d))


def clamp_score(value: float, request_id: str) -> float:
    """A pooled score clipped to [0, 1]; NaN is an engine failure."""
    if math.isnan(value):
        raise BackendError(f"PRM request {request_id} returned a NaN score")
    return min(1.0, max(0.0, value))


async def gather_or_cancel(coros: Sequence[Awaitable[T]]) -> list[T]:
    """Run `coros` concurrently; on the first failure cancel the rest (aborting their
    requests) and raise that failure."""
    if len(coros) == 1:
        return [await coros[0]]
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


class PrmScoring:
    """What both verifiers expose about how they score: the format, the resolved mode and
    the encoder, and the check that an input fits the PRM's context."""

    _format: PrmFormat
    _mode: Literal["generative", "pooling"]
    _encoder: PrmEncoder

    @property
    def format(self) -> PrmFormat:
        """The PRM's input format (how question and steps become tokens, where scores are read)."""
        return self._format

    @property
    def mode(self) -> Literal["generative", "pooling"]:
        """How scores are read: label-token log probabilities, or pooled rows."""
        return self._mode

    @property
    def encoder(self) -> PrmEncoder:
        """The format's encoder on this verifier's tokenizer."""
        return self._encoder

    if TYPE_CHECKING:  # provided by the backend class it is mixed into

        @property
        def max_model_len(self) -> int: ...

    def _check_length(self, tokens: int, num_steps: int) -> None:
        """Refuse an input longer than the PRM's context before anything is sent."""
        if tokens > self.max_model_len:
            extra = " (prompt + 1 generated token)" if self._mode == "generative" else ""
            raise PromptTooLongError(
                f"PRM input of {tokens} tokens{extra} for a question with {num_steps} steps "
                f"exceeds the verifier's max_model_len of {self.max_model_len}"
            )
