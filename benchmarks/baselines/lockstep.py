"""A lockstep search loop, as huggingface/search-and-learn runs one (read at 6f81cac).

search-and-learn's `beam_search` / `dvts` / `best_of_n` run, per iteration: ONE generate
call for all live beams of the batch, then the PRM scores every beam's WHOLE prefix (a
transformers forward pass per beam, no KV cache), then selection; nothing overlaps, and
beam search takes one problem at a time (`search_batch_size` must be 1), DVTS and
best-of-N batches of 25 problems (its default `search_batch_size`).

This module reproduces that loop on ttsearch's own engines and strategies, so that the
ratio is measured in one run with the same models, samples and selection rules: the
strategy objects (`BeamSearch`, `DVTS`, `BestOfN`) decide what to expand exactly as in
ttsearch, and only the scheduling differs:

- per iteration, every pending expansion of the batch is sampled (all requests sent at
  once, so vLLM batches them like one `generate` call; the policy's prefix cache is on,
  as search-and-learn's vLLM has it), and the loop waits for all of them;
- then every new child is scored on ALL its steps with a verifier built with
  `reuse_prefix=False` (each request recomputes its whole input: one pass per beam,
  the cost of a PRM without a KV cache), and the loop waits for all of them;
- then the strategy sees the children, in launch order, and returns the next expansions.

No code of search-and-learn is used; only its loop structure is reproduced.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from ttsearch.core.backend import Policy, Verifier
from ttsearch.core.results import Candidate, SearchResult, pick_answer
from ttsearch.core.scheduler import RequestGate
from ttsearch.core.search import ProblemSearch, SearchLimits, _ScoredChild, split_steps
from ttsearch.core.tree import Node, SearchTree
from ttsearch.errors import PromptTooLongError
from ttsearch.evaluation.datasets import Problem
from ttsearch.strategies.base import Expand, Strategy
from ttsearch.strategies.beam import BeamSearch

__all__ = ["LOCKSTEP_BATCH", "lockstep_batch_size", "run_lockstep"]

LOCKSTEP_BATCH = 25  # search-and-learn's default search_batch_size (beam search: 1)


def lockstep_batch_size(strategy: Strategy) -> int:
    """Problems per lockstep batch: 1 for beam search (search-and-learn's rule), else 25."""
    return 1 if isinstance(strategy, BeamSearch) else LOCKSTEP_BATCH


class _LockstepProblem(ProblemSearch):
    """One problem of a lockstep batch: ProblemSearch's sampling and accounting, phased."""

    async def sample_all(self, expansion: Expand, slot_base: int) -> list:
        if expansion.lookahead or expansion.temperature == 0.0:
            raise ValueError("the lockstep baseline covers sampled beam search, DVTS and best-of-N")
        prefix = expansion.node.token_ids
        return await self._sample(
            prefix,
            room=self._room(len(prefix), expansion.node.num_generated_tokens),
            n=expansion.n,
            temperature=expansion.temperature,
            top_p=expansion.top_p,
            to_completion=expansion.to_completion,
            seed_parts=(expansion.node.address, slot_base),
        )

    async def score_whole(self, parent: Node, sample) -> _ScoredChild:  # type: ignore[no-untyped-def]
        """Score every step of the child (its whole prefix), as search-and-learn does."""
        steps = parent.steps + tuple(split_steps(sample.text))
        if self.verifier is None or len(steps) == len(parent.steps):
            return _ScoredChild(sample, steps, parent.step_scores)
        try:
            scores = await self._score(steps, first=0)
        except PromptTooLongError:
            return _ScoredChild(sample, steps, parent.step_scores, dropped=True)
        return _ScoredChild(sample, steps, parent.step_scores + scores[len(parent.steps) :])

    def add(self, expansion: Expand, slot_base: int, scored: Sequence[_ScoredChild]) -> list[Node]:
        parent = expansion.node
        children = []
        for i, child in enumerate(scored):
            finish, terminal = self._classify(len(parent.token_ids), parent.num_generated_tokens, child.sample)
            children.append(
                self.tree.add_child(
                    parent,
                    token_ids=child.sample.token_ids,
                    text=child.sample.text,
                    steps=child.steps,
                    step_scores=child.step_scores,
                    finish="length" if child.dropped else finish,
                    terminal=terminal,
                    group=expansion.group,
                    slot=(slot_base, i),
                    dropped=child.dropped,
                )
            )
        return [c for c in children if c.state != "pruned"]


async def _run_batch(
    problems: Sequence[Problem],
    strategy: Strategy,
    policy: Policy,
    verifier: Verifier | None,
    *,
    limits: SearchLimits,
    seed: int,
    gate: RequestGate,
) -> list[tuple[_LockstepProblem, float]]:
    started = time.perf_counter()
    searches = []
    for problem in problems:
        tree = SearchTree(problem.problem, policy.encode_problem(problem.problem))
        searches.append(
            _LockstepProblem(
                tree, strategy, policy, verifier, limits=limits, gate=gate, seed=seed, problem_key=problem.unique_id
            )
        )
    pending: list[tuple[_LockstepProblem, Expand]] = [(s, e) for s in searches for e in strategy.start(s.tree)]
    while pending:
        slots = []
        for search, expansion in pending:
            slots.append(expansion.node.expansions)
            search.tree.mark_expanded(expansion.node)
            search.tree.in_flight += 1
        # 1. one "generate call": every live beam of the batch, then wait for all.
        samples = await asyncio.gather(*(s.sample_all(e, b) for (s, e), b in zip(pending, slots)))
        # 2. the PRM scores every new beam's whole prefix, then wait for all.
        flat = [(k, e.node, sample) for k, ((s, e), ss) in enumerate(zip(pending, samples)) for sample in ss]
        scored_flat = await asyncio.gather(*(pending[k][0].score_whole(node, smp) for k, node, smp in flat))
        scored: list[list[_ScoredChild]] = [[] for _ in pending]
        for (k, _, _), child in zip(flat, scored_flat):
            scored[k].append(child)
        # 3. selection, in launch order.
        following: list[tuple[_LockstepProblem, Expand]] = []
        for (search, expansion), slot, children in zip(pending, slots, scored):
            nodes = search.add(expansion, slot, children)
            search.tree.in_flight -= 1
            following.extend((search, e) for e in strategy.update(search.tree, expansion, nodes))
        pending = following
    seconds = time.perf_counter() - started
    return [(s, seconds / len(searches)) for s in searches]


async def run_lockstep(
    problems: Sequence[Problem],
    strategy: Strategy,
    policy: Policy,
    verifier: Verifier | None,
    *,
    limits: SearchLimits,
    seed: int = 0,
    batch_size: int | None = None,
    deadline: float | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> list[SearchResult]:
    """Search `problems` batch after batch in lockstep; results in input order.
    `usage.seconds` is the batch's wall time shared evenly by its problems.

    `deadline` (a `time.perf_counter()` value): no batch starts after it, so the results
    may cover only the first batches (at least one); `on_batch(done)` is called after each
    batch with the number of problems done so far."""
    size = batch_size or lockstep_batch_size(strategy)
    gate = RequestGate(1 << 20, 1 << 20)  # unbounded: a generate call sends everything at once
    results: list[SearchResult] = []
    for start in range(0, len(problems), size):
        if results and deadline is not None and time.perf_counter() >= deadline:
            break
        batch = problems[start : start + size]
        for index, (search, seconds) in enumerate(
            await _run_batch(batch, strategy, policy, verifier, limits=limits, seed=seed, gate=gate), start
        ):
            search.usage.seconds = seconds
            nodes = strategy.candidates(search.tree)
            candidates = tuple(Candidate.from_node(n, strategy.score(n)) for n in nodes)
            results.append(
                SearchResult(
                    problem=search.tree.problem,
                    strategy=strategy.name,
                    selection=strategy.selection,
                    answer=pick_answer(strategy.selection, candidates),
                    candidates=candidates,
                    usage=search.usage,
                    tree=None,
                    index=index,
                )
            )
        if on_batch is not None:
            on_batch(len(results))
    return results
