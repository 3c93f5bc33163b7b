"""The two interfaces the search engine talks to: a step-sampling policy and a step-scoring verifier.

The engine (`ttsearch.core.search`) only ever calls these (`KVCacheSized`: an optional extra
that KV-cache admission reads); vLLM implementations live in
`ttsearch.backends.vllm.policy` / `ttsearch.backends.vllm.verifier`, and tests use scripted
in-process fakes (`ttsearch.testing.scripted`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

# Why a sampled segment ended:
#   "step"   - it produced a stop string (the step separator "\n\n", included in the text)
#   "eos"    - the model ended the solution (EOS / end-of-turn token)
#   "length" - it hit max_tokens (a truncated step; NOT a finished solution)
FinishReason = Literal["step", "eos", "length"]


@dataclass(frozen=True, slots=True)
class SampleRequest:
    """One call to the policy: continue a token prefix, n times."""

    prompt_token_ids: tuple[int, ...]  # templated problem + every step so far, as token ids
    n: int  # number of independent continuations (one request, shared prefill)
    temperature: float
    top_p: float
    max_tokens: int  # new tokens per continuation
    stop: tuple[str, ...]  # stop strings; () generates to EOS / max_tokens
    seed: int | None = None  # per-request seed; continuation i uses a distinct stream


@dataclass(frozen=True, slots=True)
class Sample:
    """One continuation returned by the policy."""

    token_ids: tuple[int, ...]  # the new tokens only (stop string included when finish == "step")
    text: str  # their text, ending with the stop string when finish == "step"
    finish: FinishReason


@dataclass(frozen=True, slots=True)
class StepScores:
    """What the verifier returns for one partial solution."""

    scores: tuple[float, ...]  # one score in [0, 1] per requested step, in order
    prompt_tokens: int  # tokens sent to the PRM for this call (prefix-cache hits included)
    cached_tokens: int = 0  # of those, read from the PRM's prefix cache (not computed)
    requests: int = 0  # engine requests this call sent (0: a backend that does not say)


@runtime_checkable
class Policy(Protocol):
    """Samples solution steps. Implementations must be safe to call concurrently."""

    @property
    def max_model_len(self) -> int:
        """Longest prompt + generation (tokens) the model accepts."""
        ...

    def encode_problem(self, problem: str) -> list[int]:
        """Token ids of the chat-templated problem, ending at the start of the assistant turn.

        The template is applied exactly once, here: continuations append raw token ids.
        """
        ...

    async def sample(self, request: SampleRequest) -> list[Sample]:
        """Return `request.n` samples. Raises `BackendError` if the engine fails."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class RevisionPolicy(Protocol):
    """A policy that can prompt a new attempt with earlier ones (sequential revisions)."""

    def encode_revision(self, problem: str, attempts: Sequence[str]) -> list[int]:
        """Token ids of the problem followed by `attempts` (earlier solutions, oldest first)
        in the policy's revision format, ending where the next attempt starts. With no
        attempts: exactly `encode_problem(problem)`."""
        ...


@runtime_checkable
class Verifier(Protocol):
    """Scores the steps of a (partial) solution; a PRM, or an ORM that scores only the last."""

    async def score(self, question: str, steps: Sequence[str], *, first: int = 0) -> StepScores:
        """Scores of `steps[first:]`, each in [0, 1], given the question and all steps.

        `steps` are the solution's steps without their "\\n\\n" separators. Earlier steps are
        context only; returning just the new ones lets cache-friendly formats score only the
        newest step each round.
        """
        ...

    async def close(self) -> None: ...


@runtime_checkable
class ForgetsCaches(Protocol):
    """A verifier that can drop what earlier searches left in its caches (score memo,
    prefix cache), so the next search's computed-token count is its own. The experiment
    runner calls it between runs (`execution.isolate_runs`)."""

    async def forget_caches(self) -> None: ...


@runtime_checkable
class KVCacheSized(Protocol):
    """A policy or verifier that says how many tokens its engine's KV cache holds (the vLLM
    backends do). `Searcher(kv_admission=True)` admits problems by the smaller of the two
    engines' sizes; a backend that is not `KVCacheSized`, or says None, sets no bound."""

    @property
    def kv_cache_tokens(self) -> int | None:
        """Tokens the engine's KV cache holds, or None where the engine does not say."""
        ...
