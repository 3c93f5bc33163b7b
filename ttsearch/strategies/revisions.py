"""Sequential revisions (arXiv 2408.03314, section 6): chains of attempts, each written
with the chain's earlier attempts in its prompt, and a hierarchical answer.

The budget N is the number of attempts: N / `chain_length` chains run in parallel, each a
sequence of `chain_length` attempts. Attempt 1 of a chain is a plain sample of the
problem; attempt k+1 is prompted with the problem and the chain's last `context` attempts
(oldest first, in the policy's revision format: `RevisionPolicy.encode_revision`), so a
model trained to revise (the paper's revision model; the toy world's reviser) can fix
what the earlier attempts got wrong. Every attempt is a full solution, scored by the PRM
like a best-of-N sample.

Because a revision can turn a right answer wrong, the answer is chosen hierarchically:
within each chain by `selection_within` over its attempts (the chain's candidate is the
best-scored attempt with the chosen answer), then across chains by `selection` over the
chains' candidates, which are what the search returns. `chain_length=1` is best-of-N;
`chain_length=N` one purely sequential chain.

Chains never wait for each other (nor for other problems): a chain's next attempt is sent
as soon as its last one is scored. In the tree, each attempt is one node, a child of the
chain's previous attempt (the first: of the root), with its own prompt
(`Node.prompt_token_ids`).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any, ClassVar, Literal

from ttsearch.core.tree import Node, SearchTree
from ttsearch.evaluation.aggregation import SELECTION_METHODS, candidate_keys, select_by_keys
from ttsearch.evaluation.extraction import extract_answer
from ttsearch.strategies.base import Expand, SampledStrategy, Selection

__all__ = ["Revisions"]


@dataclass(frozen=True, kw_only=True)
class Revisions(SampledStrategy):
    """N attempts as N / `chain_length` chains of revisions; the answer chosen within each
    chain (`selection_within`), then across the chains' candidates (`selection`)."""

    budget_kind: ClassVar[Literal["sampling", "stepwise"]] = "stepwise"
    needs_revision_prompts: ClassVar[bool] = True

    chain_length: int | Literal["n"] = 4  # attempts per chain (1: best-of-N; "n": one sequential chain)
    context: int = 4  # earlier attempts in a revision's prompt (the paper's 4)
    selection_within: Selection = "weighted"  # how a chain's answer is chosen among its attempts

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.chain_length != "n" and (
            not isinstance(self.chain_length, int) or self.chain_length < 1 or self.n % self.chain_length
        ):
            raise ValueError(
                f"{self.name}: chain_length must be >= 1 and divide n, got n={self.n}, chain_length={self.chain_length}"
            )
        if self.context < 1:
            raise ValueError(f"{self.name}: context must be >= 1 (earlier attempts in a prompt), got {self.context}")
        if self.selection_within not in SELECTION_METHODS:
            raise ValueError(f"selection_within must be one of {SELECTION_METHODS}, got {self.selection_within!r}")

    @classmethod
    def budget_unit(cls, options: Mapping[str, Any]) -> int:
        """A whole number of chains: N moves in steps of `chain_length` (any N for "n")."""
        length = options.get("chain_length", cls.chain_length)
        return 1 if length == "n" else int(length)

    @property
    def length(self) -> int:
        """Attempts per chain."""
        return self.n if self.chain_length == "n" else self.chain_length

    @property
    def chains(self) -> int:
        return self.n // self.length

    @property
    def live_prefixes(self) -> int:
        """One attempt in flight per chain."""
        return self.chains

    def start(self, tree: SearchTree) -> Sequence[Expand]:
        return [self._attempt(tree.root, chain, revise=0) for chain in range(self.chains)]

    def update(self, tree: SearchTree, expansion: Expand, children: list[Node]) -> Sequence[Expand]:
        # The attempt this expansion wrote (one sample); a dropped one (too long for the
        # PRM) is not among `children` but is still the chain's attempt to revise.
        chain = expansion.group
        attempt = children[0] if children else [c for c in expansion.node.children if c.group == chain][-1]
        if attempt.depth >= self.length:  # an attempt's depth is its number in the chain
            return ()
        return [self._attempt(attempt, chain, revise=self.context)]

    def candidates(self, tree: SearchTree) -> list[Node]:
        """Each chain's choice among its scored attempts, in chain order."""
        by_chain = sorted(tree.finished, key=lambda node: (node.group, node.depth))
        return [self._chain_choice(list(attempts)) for _, attempts in groupby(by_chain, key=lambda node: node.group)]

    def _chain_choice(self, attempts: list[Node]) -> Node:
        """The best-scored attempt among those with the answer `selection_within` picks (the
        best-scored of all when no attempt has an answer)."""
        answers = [extract_answer(node.text) for node in attempts]
        keys = candidate_keys(answers)
        rewards = None if self.selection_within == "majority" else [self.score(node) for node in attempts]
        chosen = select_by_keys(self.selection_within, answers, keys, rewards)
        pool = attempts if chosen is None else [node for node, key in zip(attempts, keys) if key == chosen.key]
        return self.best_first(pool)[0]

    def _attempt(self, after: Node, chain: Hashable, *, revise: int) -> Expand:
        return Expand(
            after,
            n=1,
            temperature=self.temperature,
            top_p=self.top_p,
            to_completion=True,
            revise=revise,
            group=chain,
        )
