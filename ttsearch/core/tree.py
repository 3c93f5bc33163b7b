"""The per-problem search tree: nodes (partial solutions) and the frontier a strategy selects from.

A node stores only its own segment (the tokens and text it added to its parent); the full
prefix is rebuilt by walking up, so a tree of N x depth nodes costs memory proportional to
what was generated, not N x depth x prefix. Step texts and step scores are stored whole on
each node (tuples shared with the parent's) because strategies and the verifier read them
on every round.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from ttsearch.core.backend import FinishReason

# Where a node stands in the search:
#   "open"     - scored, waiting in the frontier for the strategy to expand or prune it
#   "expanded" - has children (or has an expansion in flight)
#   "pruned"   - dropped by the strategy (or by the engine: a solution too long for the PRM)
#   "finished" - a terminal node: the model ended it (eos), or it hit a length/depth limit
NodeState = Literal["open", "expanded", "pruned", "finished"]


@dataclass(eq=False, slots=True)
class Node:
    """One partial (or complete) solution."""

    id: int
    parent: Node | None
    depth: int  # number of generation rounds from the root (root = 0)
    segment_token_ids: tuple[int, ...]  # tokens this node added to its parent
    segment_text: str  # their text
    steps: tuple[str, ...]  # every step of the solution so far, without "\n\n" separators
    step_scores: tuple[float, ...]  # verifier score per step (same length as steps when scored)
    finish: FinishReason | None  # why the last segment ended (None for the root)
    group: Hashable = None  # strategy bookkeeping, inherited by children (e.g. DVTS subtree)
    state: NodeState = "open"
    lookahead_scores: tuple[float, ...] = ()  # PRM scores of a lookahead rollout's steps (those ranking uses)
    slot: tuple[int, int] = (0, 0)  # (which expansion of the parent, which sample of it)
    expansions: int = 0  # expansions sent from this node so far
    children: list[Node] = field(default_factory=list)
    # A new attempt's own prompt (sequential revisions): the problem and earlier attempts
    # in the policy's revision format. The node's solution starts here, not at the root:
    # its text, steps and generated tokens are this attempt's alone.
    prompt_token_ids: tuple[int, ...] | None = None

    @property
    def is_root(self) -> bool:
        return self.parent is None

    @property
    def lookahead_score(self) -> float | None:
        """The score at the end of the lookahead rollout (None without one)."""
        return self.lookahead_scores[-1] if self.lookahead_scores else None

    @property
    def adds_step(self) -> bool:
        """False for a child whose text was only whitespace (no new step to score)."""
        return self.parent is not None and len(self.steps) > len(self.parent.steps)

    @property
    def is_terminal(self) -> bool:
        """True when the solution cannot be continued (EOS, or a length/depth limit)."""
        return self.state == "finished"

    @property
    def token_ids(self) -> list[int]:
        """The full token sequence: the prompt (the templated problem, or this attempt's
        revision prompt) + every segment of this solution down to this node."""
        chunks: list[tuple[int, ...]] = []
        for node in self._solution_nodes():
            chunks.append(node.segment_token_ids)
            if node.prompt_token_ids is not None:
                chunks.append(node.prompt_token_ids)
        return [t for chunk in reversed(chunks) for t in chunk]

    @property
    def num_generated_tokens(self) -> int:
        """Tokens of this solution generated so far (excludes the prompt)."""
        return sum(len(node.segment_token_ids) for node in self._solution_nodes() if node.parent is not None)

    @property
    def text(self) -> str:
        """The solution text generated so far (without the prompt)."""
        return "".join(reversed([node.segment_text for node in self._solution_nodes() if node.parent is not None]))

    def _solution_nodes(self) -> Iterator[Node]:
        """This node and its ancestors up to where its solution starts (the root, or the
        first node of its attempt), nearest first."""
        node: Node | None = self
        while node is not None:
            yield node
            if node.prompt_token_ids is not None:
                return
            node = node.parent

    def attempts(self) -> list[str]:
        """The texts of the attempts on the path to this node, oldest first, this node's
        own (up to here) last: one text unless revisions started new attempts."""
        texts: list[str] = []
        node: Node | None = self
        while node is not None and node.parent is not None:
            texts.append(node.text)
            start = node
            while start.prompt_token_ids is None and start.parent is not None:
                start = start.parent
            node = start.parent  # the previous attempt's last node (None: this one began at the root)
        return texts[::-1]

    @property
    def address(self) -> tuple[tuple[int, int], ...]:
        """Slots from the root: a position in the tree that does not depend on timing."""
        return tuple(node.slot for node in self.path()[1:])

    def path(self) -> list[Node]:
        """Nodes from the root down to this one."""
        nodes: list[Node] = []
        node: Node | None = self
        while node is not None:
            nodes.append(node)
            node = node.parent
        return nodes[::-1]

    def ancestors(self) -> Iterator[Node]:
        node = self.parent
        while node is not None:
            yield node
            node = node.parent

    def snapshot(self) -> dict[str, Any]:
        """This node as JSON-ready data (one entry of `SearchTree.snapshot`): its own
        segment's text and tokens (the root's are the prompt's: none generated), the last
        step's score (None before the verifier scored a step), and where it stands."""
        return {
            "id": self.id,
            "parent": None if self.parent is None else self.parent.id,
            "depth": self.depth,
            "text": self.segment_text,
            "tokens": 0 if self.parent is None else len(self.segment_token_ids),
            "steps": len(self.steps),
            "score": self.step_scores[-1] if self.step_scores else None,
            "state": self.state,
            "finish": self.finish,
        }


class SearchTree:
    """All nodes of one problem's search, plus the sets a strategy works with.

    The engine adds scored children (open ones join `frontier`, terminal ones `finished`);
    the strategy decides what to expand, prune or keep. Node ids are unique per tree.
    """

    def __init__(
        self, problem: str, prompt_token_ids: list[int], *, batch_state: dict[Hashable, Any] | None = None
    ) -> None:
        if not prompt_token_ids:
            raise ValueError("prompt_token_ids is empty")
        self.problem = problem
        self._ids = itertools.count()
        self.root = Node(
            id=next(self._ids),
            parent=None,
            depth=0,
            segment_token_ids=tuple(prompt_token_ids),
            segment_text="",
            steps=(),
            step_scores=(),
            finish=None,
            state="expanded",
        )
        self._frontier: dict[Node, None] = {}  # open nodes in scoring order (a dict: O(1) removal)
        self.finished: list[Node] = []  # terminal nodes, in the order they were scored
        self.in_flight = 0  # expansions of this problem not yet scored
        # A strategy's own per-problem state, keyed by the strategy (one strategy object
        # serves every problem, so what it decides for this problem lives here).
        self.strategy_state: dict[Hashable, Any] = {}
        # State a strategy shares with the other problems of the same batch (one
        # `solve_all` / `run_jobs` call; `solve` is a batch of one), keyed by the strategy:
        # e.g. adaptive best-of-N's budget pool.
        self.batch_state: dict[Hashable, Any] = {} if batch_state is None else batch_state
        # The search's seed for this problem (set by the search; None: unseeded), from
        # which `random()` derives a strategy's own draws (e.g. resampling).
        self.seed: int | None = None
        # Bumped on every change a viewer of the tree would see (a node added, a node's
        # state changed), so a watcher polling a live search can tell whether it moved
        # without comparing snapshots.
        self.version = 0

    def random(self, *parts: object) -> random.Random:
        """A random generator for a strategy's own draws (e.g. particle resampling at a
        depth): seeded from the search's seed for this problem and `parts`, so a run
        reproduces whatever order requests complete in; unseeded when the search is."""
        if self.seed is None:
            return random.Random()
        return random.Random("/".join(map(str, (self.seed, *parts))))

    @property
    def frontier(self) -> list[Node]:
        """Open nodes (scored, not yet expanded or pruned), in the order they were scored."""
        return list(self._frontier)

    @property
    def prompt_length(self) -> int:
        return len(self.root.segment_token_ids)

    def add_child(
        self,
        parent: Node,
        *,
        token_ids: tuple[int, ...],
        text: str,
        steps: tuple[str, ...],
        step_scores: tuple[float, ...],
        finish: FinishReason,
        terminal: bool,
        lookahead_scores: tuple[float, ...] = (),
        group: Hashable = None,
        slot: tuple[int, int] = (0, 0),
        dropped: bool = False,
        prompt_token_ids: tuple[int, ...] | None = None,
    ) -> Node:
        """Add a scored child. `dropped`: kept in the tree for the record but pruned at
        once (neither open nor a candidate), e.g. a solution too long for the PRM."""
        node = Node(
            id=next(self._ids),
            parent=parent,
            depth=parent.depth + 1,
            segment_token_ids=token_ids,
            segment_text=text,
            steps=steps,
            step_scores=step_scores,
            finish=finish,
            group=parent.group if group is None else group,
            state="pruned" if dropped else "finished" if terminal else "open",
            lookahead_scores=lookahead_scores,
            slot=slot,
            prompt_token_ids=prompt_token_ids,
        )
        parent.children.append(node)
        self.version += 1
        if dropped:
            pass
        elif terminal:
            self.finished.append(node)
        else:
            self._frontier[node] = None
        return node

    def mark_expanded(self, node: Node) -> None:
        """Called by the engine when an expansion of `node` is sent."""
        if node.state == "open":
            self._leave_frontier(node)
        elif node.state != "expanded":
            raise ValueError(f"cannot expand node {node.id}: it is {node.state}")
        node.state = "expanded"
        node.expansions += 1
        self.version += 1

    def mark_revised(self, node: Node) -> None:
        """Called by the engine when a new attempt after `node`'s is sent (`Expand.revise`).
        The attempt keeps its state: a finished one stays a candidate."""
        node.expansions += 1
        self.version += 1

    def prune(self, nodes: list[Node] | Node) -> None:
        """Drop open nodes from the frontier."""
        for node in [nodes] if isinstance(nodes, Node) else nodes:
            if node.state != "open":
                raise ValueError(f"cannot prune node {node.id}: it is {node.state}")
            self._leave_frontier(node)
            node.state = "pruned"
            self.version += 1

    def finish_open(self, node: Node) -> None:
        """Turn an open node into a terminal one (e.g. a strategy's depth or budget limit)."""
        if node.state != "open":
            raise ValueError(f"cannot finish node {node.id}: it is {node.state}")
        self._leave_frontier(node)
        node.state = "finished"
        self.finished.append(node)
        self.version += 1

    def _leave_frontier(self, node: Node) -> None:
        del self._frontier[node]

    def nodes(self) -> Iterator[Node]:
        """Every node, depth-first from the root."""
        stack = [self.root]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))

    def __len__(self) -> int:
        return sum(1 for _ in self.nodes())

    def snapshot(self) -> dict[str, Any]:
        """The tree as JSON-ready data, what the live search view and the report's tree
        pages draw: `{"problem", "version", "nodes"}`, the nodes depth-first from the root
        (a parent before its children, siblings in the order they were added), each as
        `Node.snapshot` gives it. Nodes keep only their own segment, so the data grows
        with what was generated, not with the prefixes."""
        return {"problem": self.problem, "version": self.version, "nodes": [node.snapshot() for node in self.nodes()]}
