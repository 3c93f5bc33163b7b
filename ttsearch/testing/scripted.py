"""Scripted in-process backends: exact, fast stand-ins for vLLM in strategy and engine tests.

The policy tokenises one character per token (so token counts are character counts) and
asks a script for the text the "model" would write next; it then applies stop strings,
EOS and max_tokens exactly as the vLLM backend does. The verifier scores each step with
a script function of the steps so far. Both record every call, and can add delays to
test concurrency.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from ttsearch.core.backend import FinishReason, Sample, SampleRequest, StepScores
from ttsearch.errors import PromptTooLongError

EOS = "<eos>"  # end the scripted continuation with this to finish the solution
BOS_ID = 1  # token id 0 is unused; characters are ord(c) + 2
PROMPT_FORMAT = "Q: {problem}\nA: "
PREVIOUS_ATTEMPT = "\nP: "  # revision prompts: "Q: {problem}\nP: {attempt 1}\nP: {attempt 2}\nA: "


@dataclass(frozen=True, slots=True)
class ScriptCall:
    """What a policy script sees for one sample."""

    problem: str
    text: str  # solution text so far (prompt excluded)
    index: int  # which of the request's n samples
    request: SampleRequest
    rng: random.Random  # seeded from the request seed and index when the request has a seed
    previous: tuple[str, ...] = ()  # a revision prompt's earlier attempts, oldest first


PolicyScript = Callable[[ScriptCall], str]
VerifierScript = Callable[[str, tuple[str, ...]], float]


def encode(text: str) -> list[int]:
    return [ord(c) + 2 for c in text]


def decode(ids: Sequence[int]) -> str:
    return "".join(chr(i - 2) for i in ids if i != BOS_ID)


class ScriptedPolicy:
    """A `Policy` whose continuations come from `script(call) -> text` (end it with EOS)."""

    def __init__(
        self,
        script: PolicyScript,
        *,
        max_model_len: int = 100_000,
        delay: Callable[[SampleRequest], Awaitable[None]] | None = None,
    ) -> None:
        self.script = script
        self._max_model_len = max_model_len
        self.delay = delay
        self.requests: list[SampleRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.closed = False

    @property
    def max_model_len(self) -> int:
        return self._max_model_len

    def encode_problem(self, problem: str) -> list[int]:
        return [BOS_ID, *encode(PROMPT_FORMAT.format(problem=problem))]

    def encode_revision(self, problem: str, attempts: Sequence[str]) -> list[int]:
        """The problem, then each earlier attempt on a "P: " line (a `RevisionPolicy`)."""
        head = "Q: " + problem + "".join(PREVIOUS_ATTEMPT + attempt for attempt in attempts)
        return [BOS_ID, *encode(head + "\nA: ")]

    async def sample(self, request: SampleRequest) -> list[Sample]:
        if self.closed:
            raise RuntimeError("scripted policy is closed")
        self.requests.append(request)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay is not None:
                await self.delay(request)
            else:
                await asyncio.sleep(0)
            prompt = decode(request.prompt_token_ids)
            problem, text = _split_prompt(prompt)
            problem, *previous = problem.split(PREVIOUS_ATTEMPT)
            samples = []
            for i in range(request.n):
                seed = None if request.seed is None else request.seed * 1000 + i
                call = ScriptCall(problem, text, i, request, random.Random(seed), tuple(previous))
                samples.append(_apply_limits(self.script(call), request))
            return samples
        finally:
            self.in_flight -= 1

    async def close(self) -> None:
        self.closed = True


def _split_prompt(prompt: str) -> tuple[str, str]:
    head, sep, text = prompt.partition("\nA: ")
    if not sep or not head.startswith("Q: "):
        raise ValueError(f"not a scripted prompt: {prompt[:40]!r}")
    return head[3:], text


def _apply_limits(continuation: str, request: SampleRequest) -> Sample:
    """Cut a continuation where a real engine would: stop string, EOS, or max_tokens."""
    eos_at = continuation.find(EOS)
    body = continuation if eos_at < 0 else continuation[:eos_at]
    stop_end = None
    for stop in request.stop:
        at = body.find(stop)
        if at >= 0 and (stop_end is None or at + len(stop) < stop_end):
            stop_end = at + len(stop)
    finish: FinishReason
    if stop_end is not None and stop_end <= request.max_tokens:
        text, finish = body[:stop_end], "step"
    elif len(body) > request.max_tokens or eos_at < 0:
        # No EOS: the scripted model would go on writing, so it runs into max_tokens.
        text, finish = body[: request.max_tokens], "length"
    else:
        text, finish = body, "eos"
    return Sample(token_ids=tuple(encode(text)), text=text, finish=finish)


SCORE_TAG = re.compile(r"\[p=([0-9.]+)\]")


def score_from_tag(problem: str, steps: tuple[str, ...]) -> float:
    """Default verifier script: the `[p=0.7]` tag in the last step, else 0.5."""
    match = SCORE_TAG.search(steps[-1])
    return float(match.group(1)) if match else 0.5


class ScriptedVerifier:
    """A `Verifier` whose score for step j is `script(problem, steps[: j + 1])`."""

    def __init__(
        self,
        script: VerifierScript = score_from_tag,
        *,
        delay: Callable[[tuple[str, ...]], Awaitable[None]] | None = None,
        max_input_chars: int | None = None,
    ) -> None:
        self.script = script
        self.delay = delay
        self.max_input_chars = max_input_chars  # longer inputs raise PromptTooLongError, as vLLM's would
        self.calls: list[tuple[str, tuple[str, ...], int]] = []
        self.closed = False

    async def score(self, question: str, steps: Sequence[str], *, first: int = 0) -> StepScores:
        if self.closed:
            raise RuntimeError("scripted verifier is closed")
        steps = tuple(steps)
        if not 0 <= first < len(steps):
            raise ValueError(f"first={first} out of range for {len(steps)} steps")
        if self.max_input_chars is not None and sum(len(s) for s in steps) > self.max_input_chars:
            raise PromptTooLongError(f"PRM input of {sum(len(s) for s in steps)} characters > {self.max_input_chars}")
        self.calls.append((question, steps, first))
        if self.delay is not None:
            await self.delay(steps)
        else:
            await asyncio.sleep(0)
        scores = tuple(self.script(question, steps[: j + 1]) for j in range(first, len(steps)))
        return StepScores(scores=scores, prompt_tokens=sum(len(s) for s in steps))

    async def close(self) -> None:
        self.closed = True
