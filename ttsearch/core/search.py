"""The one search loop, shared by every strategy.

`ProblemSearch.run` asks the strategy for expansions, runs each one as its own task
(sample n continuations in ONE policy request, optional greedy lookahead rollouts, PRM
scoring of the new steps), adds the scored children to the tree and hands them back to
the strategy as soon as that expansion is done. There is no barrier across problems and
none inside a problem unless the strategy keeps one (beam search waits for its round;
DVTS subtrees do not wait for each other).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

from ttsearch.core.backend import FinishReason, Policy, RevisionPolicy, Sample, SampleRequest, Verifier
from ttsearch.core.scheduler import RequestGate, Usage, request_seed
from ttsearch.core.strategy import Expand, Strategy
from ttsearch.core.tree import Node, SearchTree
from ttsearch.errors import BackendError, PromptTooLongError
from ttsearch.prompts import STEP_SEPARATOR


@dataclass(frozen=True, kw_only=True)
class SearchLimits:
    """Length limits that hold for every strategy."""

    max_solution_tokens: int = 2048  # generated tokens per solution (the blog's limit)
    max_step_tokens: int | None = None  # tokens per step; None: up to the solution limit

    def __post_init__(self) -> None:
        if self.max_solution_tokens < 1:
            raise ValueError(f"max_solution_tokens must be >= 1, got {self.max_solution_tokens}")
        if self.max_step_tokens is not None and self.max_step_tokens < 1:
            raise ValueError(f"max_step_tokens must be >= 1 or None, got {self.max_step_tokens}")


@dataclass(frozen=True, slots=True)
class _ScoredChild:
    """One sampled child with its scores, before it joins the tree."""

    sample: Sample
    steps: tuple[str, ...]  # every step of the solution so far
    step_scores: tuple[float, ...]  # the parent's scores + those of the new steps
    lookahead_scores: tuple[float, ...] = ()  # the rollout's scores that ranking uses
    dropped: bool = False  # the PRM could not take it: not a candidate


def split_steps(text: str) -> list[str]:
    """Steps of a solution text: split on the separator, whitespace-only pieces dropped.

    A text ending with the separator therefore gets no empty trailing step (a defect of
    the reference implementation that made `last` score an empty step).
    """
    return [part.strip() for part in text.split(STEP_SEPARATOR) if part.strip()]


class ProblemSearch:
    """One problem's search: the tree, the strategy's decisions and the backend calls."""

    def __init__(
        self,
        tree: SearchTree,
        strategy: Strategy,
        policy: Policy,
        verifier: Verifier | None,
        *,
        limits: SearchLimits,
        gate: RequestGate,
        seed: int | None,
        problem_key: object,
        usage: Usage | None = None,
        priority: int = 0,
    ) -> None:
        if strategy.needs_verifier and verifier is None:
            raise ValueError(f"{strategy.name} needs a verifier (PRM); the searcher has none")
        self.tree = tree
        tree.seed = request_seed(seed, problem_key, "strategy")
        self.strategy = strategy
        self.policy = policy
        self.verifier = verifier if strategy.needs_verifier else None
        self.limits = limits
        self.gate = gate
        self.seed = seed
        self.problem_key = problem_key
        self.usage = Usage() if usage is None else usage  # the caller's, to read even if the search fails
        self.priority = priority  # at a full request gate, lower goes first (admission order)
        self._max_model_len = policy.max_model_len

    async def run(self) -> list[Node]:
        """Search until the strategy stops asking; return its candidates."""
        tasks: dict[asyncio.Task[list[Node]], tuple[int, Expand]] = {}
        order = 0

        def launch(expansions: Iterable[Expand]) -> None:
            nonlocal order
            for expansion in expansions:
                slot_base = expansion.node.expansions
                if expansion.revise:
                    self.tree.mark_revised(expansion.node)
                else:
                    self.tree.mark_expanded(expansion.node)
                self.tree.in_flight += 1
                task = asyncio.create_task(self._expand(expansion, slot_base))
                tasks[task] = (order, expansion)
                order += 1

        try:
            launch(self.strategy.start(self.tree))
            while tasks:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                # Handle simultaneous completions in launch order, for determinism.
                for task in sorted(done, key=lambda t: tasks[t][0]):
                    _, expansion = tasks.pop(task)
                    children = task.result()
                    self.tree.in_flight -= 1
                    launch(self.strategy.update(self.tree, expansion, children))
        finally:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
        return self.strategy.candidates(self.tree)

    # -- one expansion -----------------------------------------------------------------

    async def _expand(self, expansion: Expand, expansion_index: int) -> list[Node]:
        """Sample and score one expansion's children; return those the strategy can use."""
        parent = expansion.node
        if expansion.revise:
            prefix, before = self._revision_prompt(parent, expansion.revise), 0
        else:
            prefix, before = parent.token_ids, parent.num_generated_tokens
        room = self._room(len(prefix), before)
        # Greedy decoding is deterministic: n samples at T=0 would be n copies of one, so
        # decode (and score, and roll out) once and give the strategy n identical children.
        # Usage then counts what was computed, whatever the backend does with n > 1.
        greedy = expansion.temperature == 0.0
        samples = await self._sample(
            prefix,
            n=1 if greedy else expansion.n,
            temperature=expansion.temperature,
            top_p=expansion.top_p,
            to_completion=expansion.to_completion,
            seed_parts=(parent.address, expansion_index),
            room=room,
        )
        scored = await asyncio.gather(
            *(self._score_child(parent, prefix, sample, expansion, i) for i, sample in enumerate(samples))
        )
        if greedy:
            scored = scored * expansion.n
        children = []
        for i, child in enumerate(scored):
            finish, terminal = self._classify(len(prefix), before, child.sample)
            children.append(
                self.tree.add_child(
                    parent,
                    token_ids=child.sample.token_ids,
                    text=child.sample.text,
                    steps=child.steps,
                    step_scores=child.step_scores,
                    finish="length" if child.dropped else finish,
                    terminal=terminal,
                    lookahead_scores=child.lookahead_scores,
                    group=expansion.group,
                    slot=(expansion_index, i),
                    dropped=child.dropped,
                    prompt_token_ids=tuple(prefix) if expansion.revise else None,
                )
            )
        return [child for child in children if child.state != "pruned"]

    def _room(self, prefix_length: int, generated_before: int) -> int:
        """Tokens one continuation may take: what is left of the solution's budget or of
        the context, whichever is less."""
        return min(self.limits.max_solution_tokens - generated_before, self._max_model_len - prefix_length)

    def _revision_prompt(self, node: Node, context: int) -> list[int]:
        """The prompt of a new attempt after `node`'s: the problem and the chain's last
        `context` attempts. Older attempts are left out while the prompt leaves less than a
        whole solution's room in the context (at least one token of room, with no attempt
        at all, is what the first attempt had)."""
        policy = self.policy
        if not isinstance(policy, RevisionPolicy):  # checked when the search starts; kept for mypy
            raise TypeError(f"{type(policy).__name__} cannot render revision prompts")
        attempts = node.attempts()[-context:]
        while True:
            prompt = policy.encode_revision(self.tree.problem, attempts)
            fits = len(prompt) + self.limits.max_solution_tokens <= self._max_model_len
            if fits or not attempts or (len(attempts) == 1 and len(prompt) < self._max_model_len):
                return prompt
            attempts = attempts[1:]

    def _classify(self, prefix_length: int, generated_before: int, sample: Sample) -> tuple[FinishReason, bool]:
        """A child is terminal on EOS, on truncation, or when no room is left to continue."""
        if sample.finish != "step":
            return sample.finish, True
        generated = generated_before + len(sample.token_ids)
        total = prefix_length + len(sample.token_ids)
        if generated >= self.limits.max_solution_tokens or total >= self._max_model_len:
            return "length", True
        return "step", False

    async def _score_child(
        self, parent: Node, prefix: list[int], sample: Sample, expansion: Expand, index: int
    ) -> _ScoredChild:
        new_steps = split_steps(sample.text)
        # A new attempt (revisions) is a solution of its own: nothing inherited.
        earlier, earlier_scores = ((), ()) if expansion.revise else (parent.steps, parent.step_scores)
        steps = earlier + tuple(new_steps)
        if self.verifier is None or not new_steps:
            # Nothing new to score (no verifier, or a whitespace-only step: the PRM formats
            # have no empty steps). The child's steps are its parent's, so are its scores;
            # strategies rank a child that added no step last (`Strategy.rank_score`).
            return _ScoredChild(sample, steps, earlier_scores)
        try:
            own = await self._score(steps, first=len(earlier))
        except PromptTooLongError:
            # Too long for the PRM: this candidate cannot be ranked. Drop it (as a length
            # finish) and let the search go on with the others.
            return _ScoredChild(sample, steps, earlier_scores, dropped=True)
        lookahead: tuple[float, ...] = ()
        if expansion.lookahead and sample.finish == "step":
            rollout = await self._rollout(parent, prefix + list(sample.token_ids), sample, expansion, index)
            if rollout:
                lookahead = await self._score_rollout(steps, rollout)
        return _ScoredChild(sample, steps, earlier_scores + own, lookahead)

    async def _score_rollout(self, steps: tuple[str, ...], rollout: list[str]) -> tuple[float, ...]:
        """The rollout scores the strategy's ranking uses: with "last" only the rollout's
        final step (the paper's rule), else every rollout step (min / prod reduce over the
        node's steps and the rollout's). Empty when the PRM cannot take the rollout."""
        whole = steps + tuple(rollout)
        first = len(whole) - 1 if self.strategy.reduction == "last" else len(steps)
        try:
            return await self._score(whole, first=first)
        except PromptTooLongError:
            return ()  # ranked by its own steps' scores, as a step with no room to roll out

    async def _rollout(
        self, parent: Node, prefix: list[int], first: Sample, expansion: Expand, index: int
    ) -> list[str]:
        """k greedy steps after a candidate step; only used to score that step."""
        steps: list[str] = []
        generated = parent.num_generated_tokens + len(first.token_ids)
        for k in range(expansion.lookahead):
            room = self._room(len(prefix), generated)
            if room < 1:
                break
            (sample,) = await self._sample(
                prefix,
                n=1,
                temperature=0.0,
                top_p=1.0,
                to_completion=False,
                seed_parts=(parent.address, "lookahead", index, k),
                room=room,
            )
            self.usage.rollout_samples += 1
            steps.extend(split_steps(sample.text))
            prefix = prefix + list(sample.token_ids)
            generated += len(sample.token_ids)
            if sample.finish != "step":
                break
        return steps

    # -- backend calls -------------------------------------------------------------------

    async def _sample(
        self,
        prefix: list[int],
        *,
        n: int,
        temperature: float,
        top_p: float,
        to_completion: bool,
        seed_parts: tuple[object, ...],
        room: int,
    ) -> list[Sample]:
        """`n` continuations of `prefix`, at most `room` tokens each (one step, unless
        `to_completion`)."""
        # Open nodes always have room: _classify finishes a node that reaches a limit.
        assert room >= 1, "expanding a node with no token budget left"
        max_tokens = (
            room if to_completion or self.limits.max_step_tokens is None else min(room, self.limits.max_step_tokens)
        )
        request = SampleRequest(
            prompt_token_ids=tuple(prefix),
            n=n,
            temperature=temperature,
            top_p=top_p,
            max_tokens=max_tokens,
            stop=() if to_completion else (STEP_SEPARATOR,),
            seed=request_seed(self.seed, self.problem_key, *seed_parts),
        )
        async with self.gate.policy(self.priority):
            samples = await self.policy.sample(request)
        if len(samples) != n:
            raise BackendError(f"policy returned {len(samples)} samples for n={n}")
        self.usage.policy_calls += 1
        self.usage.policy_samples += n
        self.usage.prompt_tokens += len(prefix)
        self.usage.generated_tokens += sum(len(s.token_ids) for s in samples)
        return samples

    async def _score(self, steps: tuple[str, ...], *, first: int) -> tuple[float, ...]:
        assert self.verifier is not None
        async with self.gate.verifier(self.priority):
            result = await self.verifier.score(self.tree.problem, steps, first=first)
        if len(result.scores) != len(steps) - first:
            raise BackendError(f"verifier returned {len(result.scores)} scores for {len(steps) - first} steps")
        self.usage.verifier_calls += 1
        self.usage.verifier_tokens += result.prompt_tokens
        self.usage.verifier_cached_tokens += result.cached_tokens
        self.usage.verifier_computed_tokens += result.prompt_tokens - result.cached_tokens
        self.usage.verifier_requests += result.requests
        return tuple(result.scores)
