"""Monte Carlo tree search with the PRM as the value (issue 18; docs/methods/mcts.md).

One iteration: select by UCT from the root down to an open leaf, expand that leaf with
`children` sampled steps (one `Expand`), value each new node by its PRM score (after a
short greedy rollout when `rollout` > 0, through `Expand.lookahead`), and back every new
node's value up its path (visits + 1, value sum + value, up to the root).

- UCT(c) = Q(c) + c_uct * sqrt(ln N(parent) / N(c)), Q = value sum / visits: the UCB1 of
  TensorRT-LLM Scaffolding's MCTS and of rStar-Math's `puct`. Every node is valued when it
  is created, so N(c) >= 1 and no child is "unvisited". Ties go to the earlier tree
  position (`Node.address`).
- Finished leaves (EOS, or truncated: finish "length") are never expanded again and never
  selected; their value is their final reward (`score`: the reduction over their step
  scores). A subtree without an open leaf is skipped; when no open leaf is left anywhere,
  the search ends early.
- Budget, in sampled steps (policy samples, plus `rollout` greedy steps per child):
  `generation_budget` = n (rollout + 1) samples per tree level, like beam search's N
  samples per depth. An expansion that would create level L (the deepest level so far, or
  the new one it opens) is launched only while samples spent + its cost <= n (rollout + 1)
  L; the search stops at the first UCT choice that does not fit. Until a first solution
  has finished, a choice that does not fit is replaced by the best open leaf of the
  deepest level (that always fits: a new level adds n (rollout + 1) and an expansion
  costs children (rollout + 1) <= that), so every search ends with a candidate.
- Concurrency: `parallel` selections per wave (default n // children: beam search's
  request shape), kept apart by a virtual loss (one visit of value 0 on each node of a
  chosen path while its expansion runs). A wave ends when all its expansions are scored;
  their values are backed up in tree order, so results do not depend on request timing.
- The answer: `selection` over every finished leaf ("naive", the default: the best final
  reward; "weighted" / "majority": votes).

`value="rollout"` is classic MCTS with simulations: each new open node is valued by the
final reward of ONE completion sampled from it to EOS (at the search's temperature; one
`Expand(to_completion=True)` per node), and that completion stays in the tree as a
finished leaf, a candidate answer (it is never selected or expanded: the tree grows one
step per child). The budget is then n completions, like best-of-N's n samples: each
expansion charges its children (the last one gets only what is left), so every search
ends with about n candidates. Selection descends while a node has step children; a node
whose only child is its rollout is a leaf.

Per-problem statistics live in the tree (`tree.strategy_state[self]`, an `MCTSState`),
so one strategy object serves every problem at once.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from ttsearch.core.tree import Node, SearchTree
from ttsearch.strategies.base import DepthLimitedStrategy, Expand, Selection


@dataclass(eq=False)
class MCTSState:
    """One problem's search statistics (kept in `tree.strategy_state[strategy]`)."""

    visits: dict[Node, int] = field(default_factory=dict)  # N: nodes valued in the subtree (itself included)
    value_sums: dict[Node, float] = field(default_factory=dict)  # W: the sum of their values
    spent: int = 0  # samples charged: children * (rollout + 1) per expansion launched
    levels: int = 0  # the deepest level created or being created (root = 0)
    waves: int = 0  # waves launched
    scored: list[tuple[Expand, list[Node]]] = field(default_factory=list)  # this wave's finished expansions
    virtual: list[list[Node]] = field(default_factory=list)  # paths carrying a virtual loss
    # value="rollout": the completions (candidates, never selected), the rollout request of
    # each node being valued, and the values waiting for the end of the wave.
    rollouts: set[Node] = field(default_factory=set)
    rolling: dict[Expand, Node] = field(default_factory=dict)
    pending: dict[Node, float] = field(default_factory=dict)

    def q(self, node: Node) -> float:
        """Mean value of the node's subtree (0.0 before it is valued)."""
        n = self.visits.get(node, 0)
        return self.value_sums.get(node, 0.0) / n if n else 0.0


@dataclass(frozen=True, kw_only=True)
class MCTS(DepthLimitedStrategy):
    """MCTS over PRM-scored steps: UCT selection, `children` samples per expansion, PRM value.

    `n`: the budget: with `value="step"`, n samples per tree level (n (rollout + 1) with
    rollouts); with `value="rollout"`, n sampled completions. `children`: samples per
    expansion (1 <= children <= n); `c_uct`: the exploration constant (0 is greedy on Q);
    `value`: "step" (a new node's PRM score) or "rollout" (the final reward of one
    completion sampled from it, kept as a candidate); `rollout`: greedy steps after each new
    step before the PRM values it (value="step" only); `parallel`: selections per wave
    (None: n // children); `max_depth`: the expansion that reaches it samples to EOS.
    """

    budget_kind: ClassVar[Literal["sampling", "stepwise"]] = "stepwise"

    children: int = 4
    c_uct: float = 1.414  # ~sqrt(2): UCB1 for rewards in [0, 1], Scaffolding's default
    rollout: int = 0
    parallel: int | None = None
    # A weighted vote over the candidates: on the toy world it beats the best final reward
    # (rStar's and Scaffolding's answer) in both value modes (docs/methods/results.md).
    selection: Selection = "weighted"
    # "rollout": classic simulation, one sampled completion per new node; "step" (the PRM
    # score of the new step) finishes about one distinct solution per search on the toy
    # world and loses to plain sampling there (docs/methods/mcts.md).
    value: Literal["step", "rollout"] = "rollout"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.children < 1 or self.children > self.n:
            raise ValueError(f"MCTS: children must be in 1..n, got children={self.children}, n={self.n}")
        if not (math.isfinite(self.c_uct) and self.c_uct >= 0):
            raise ValueError(f"MCTS: c_uct must be a finite number >= 0, got {self.c_uct}")
        if self.rollout < 0:
            raise ValueError(f"MCTS: rollout must be >= 0, got {self.rollout}")
        if self.parallel is not None and self.parallel < 1:
            raise ValueError(f"MCTS: parallel must be >= 1 (or None for n // children), got {self.parallel}")
        if self.value not in ("step", "rollout"):
            raise ValueError(f"MCTS: value must be 'step' or 'rollout', got {self.value!r}")
        if self.value == "rollout" and self.rollout:
            raise ValueError(
                f"MCTS: rollout={self.rollout} greedy steps apply to value='step'; "
                "value='rollout' already samples each node's completion"
            )

    # -- budget and reporting ------------------------------------------------------------

    @property
    def generation_budget(self) -> int:
        """value="step": samples per tree level, n (rollout + 1), as beam search's N
        (lookahead: N(k+1)); value="rollout": completions in all, n (as best-of-N's N)."""
        return self.n * (self.rollout + 1)

    @property
    def expansion_cost(self) -> int:
        """Samples charged per expansion: each child and its greedy rollout steps (with
        value="rollout": each child, which stands for its completion)."""
        return self.children * (self.rollout + 1)

    @property
    def selections_per_wave(self) -> int:
        return self.parallel if self.parallel is not None else max(1, self.n // self.children)

    @property
    def live_prefixes(self) -> int:
        """One prefix per expansion of a wave (its children share it); with rollouts, one
        per child being rolled out."""
        if self.value == "rollout":
            return self.selections_per_wave * self.children
        return self.selections_per_wave

    def options(self) -> dict[str, Any]:
        """The fields, with `parallel` resolved (None records as n // children)."""
        options = dataclasses.asdict(self)
        options["parallel"] = self.selections_per_wave
        return options

    def stats(self, tree: SearchTree) -> MCTSState:
        """This problem's visit counts, value sums and budget."""
        state = tree.strategy_state[self]
        assert isinstance(state, MCTSState)
        return state

    def node_value(self, node: Node) -> float:
        """value="step": a new node's value: its PRM score reduced (with the rollout's scores when it has
        some); a finished node's final reward; 0.0 (the lowest) for an open child that added
        no step (whitespace only)."""
        if node.adds_step:
            return self.rank_score(node)
        return self.score(node) if node.is_terminal else 0.0

    def uct(self, state: MCTSState, node: Node, log_parent_visits: float) -> float:
        visits = state.visits[node]
        exploration = self.c_uct * math.sqrt(log_parent_visits / visits) if self.c_uct else 0.0
        return state.value_sums[node] / visits + exploration

    # -- the search ----------------------------------------------------------------------

    def start(self, tree: SearchTree) -> Sequence[Expand]:
        state = MCTSState()
        state.visits[tree.root] = 0
        state.value_sums[tree.root] = 0.0
        tree.strategy_state[self] = state
        state.waves = 1
        return [self._launch(state, [tree.root])]

    def update(self, tree: SearchTree, expansion: Expand, children: list[Node]) -> Sequence[Expand]:
        state = self.stats(tree)
        rollouts: list[Expand] = []
        if expansion in state.rolling:
            self._rolled_out(state, state.rolling.pop(expansion), children)
        else:
            state.scored.append((expansion, children))
            if self.value == "rollout":
                rollouts = self._roll_out(state, children)
        if rollouts or tree.in_flight:  # a wave ends when all of its expansions are valued
            return rollouts
        self._end_wave(state)
        return self._next_wave(tree, state)

    def _roll_out(self, state: MCTSState, children: list[Node]) -> list[Expand]:
        """One completion per new open child; a finished child is its own completion."""
        requests = []
        for child in children:
            if child.is_terminal:
                state.pending[child] = self.score(child)
                continue
            request = Expand(child, n=1, temperature=self.temperature, top_p=self.top_p, to_completion=True)
            state.rolling[request] = child
            requests.append(request)
        return requests

    def _rolled_out(self, state: MCTSState, node: Node, completions: list[Node]) -> None:
        """The node's value is its completion's final reward (0.0, the lowest, when the
        completion was dropped, e.g. too long for the PRM)."""
        state.rollouts.update(completions)
        state.pending[node] = self.score(completions[0]) if completions else 0.0

    def candidates(self, tree: SearchTree) -> list[Node]:
        """Every finished leaf, best final reward first."""
        return self.best_first(tree.finished)

    def _launch(self, state: MCTSState, path: list[Node]) -> Expand:
        node = path[-1]
        children = self.children
        if self.value == "rollout":  # the last expansion gets what is left of n completions
            children = min(children, self.n - state.spent)
        state.spent += children * (self.rollout + 1)
        state.levels = max(state.levels, node.depth + 1)
        for on_path in path:  # virtual loss: one visit of value 0 until the wave ends
            state.visits[on_path] += 1
        state.virtual.append(path)
        return self.expand(node, children, lookahead=self.rollout)

    def _end_wave(self, state: MCTSState) -> None:
        for path in state.virtual:
            for node in path:
                state.visits[node] -= 1
        state.virtual.clear()
        # Back up in tree order (not completion order): float sums then do not depend on timing.
        for _, children in sorted(state.scored, key=lambda done: done[0].node.address):
            for child in children:
                value = state.pending.pop(child) if self.value == "rollout" else self.node_value(child)
                self._backup(state, child, value)
        state.scored.clear()

    @staticmethod
    def _backup(state: MCTSState, child: Node, value: float) -> None:
        node: Node | None = child
        while node is not None:
            state.visits[node] = state.visits.get(node, 0) + 1
            state.value_sums[node] = state.value_sums.get(node, 0.0) + value
            node = node.parent

    def _fits(self, state: MCTSState, node: Node) -> bool:
        if self.value == "rollout":
            return state.spent < self.n
        levels = max(state.levels, node.depth + 1)
        return state.spent + self.expansion_cost <= self.generation_budget * levels

    def _next_wave(self, tree: SearchTree, state: MCTSState) -> list[Expand]:
        open_leaves = _open_leaf_counts(tree, state.rollouts)
        wave: list[Expand] = []
        while len(wave) < self.selections_per_wave and open_leaves[tree.root]:
            path = self._select(state, tree.root, open_leaves)
            if not self._fits(state, path[-1]):
                if tree.finished or wave:
                    break  # the budget is spent: the search ends once this wave is scored
                # No solution yet: deepen the best open leaf of the deepest level instead.
                fallback = self._deepest_open_leaf(tree, state, open_leaves)
                if fallback is not None and self._fits(state, fallback):
                    wave.append(self._launch(state, fallback.path()))
                break
            wave.append(self._launch(state, path))
            for node in path:
                open_leaves[node] -= 1
        if wave:
            state.waves += 1
        return wave

    def _select(self, state: MCTSState, root: Node, open_leaves: dict[Node, int]) -> list[Node]:
        """UCT descent to an open leaf not yet chosen in this wave."""
        path = [root]
        node = root
        while open_leaves[node] and not _is_leaf(node, open_leaves):
            log_visits = math.log(state.visits[node])
            best: Node | None = None
            best_uct = -math.inf
            for child in node.children:  # tree order: ties go to the earlier child
                if open_leaves.get(child, 0):
                    uct = self.uct(state, child, log_visits)
                    if uct > best_uct:
                        best, best_uct = child, uct
            assert best is not None, "a node with open leaves has a child with open leaves"
            node = best
            path.append(node)
        return path

    def _deepest_open_leaf(self, tree: SearchTree, state: MCTSState, open_leaves: dict[Node, int]) -> Node | None:
        leaves = [node for node in tree.frontier if open_leaves.get(node, 0)]
        if not leaves:
            return None
        return min(leaves, key=lambda node: (-node.depth, -state.q(node), node.address))


def _open_leaf_counts(tree: SearchTree, rollouts: set[Node]) -> dict[Node, int]:
    """Open leaves under each node (itself included): 0 for exhausted subtrees. A leaf is
    an open node, or (value="rollout") a non-root node whose only children are its
    completions; completions and finished or pruned nodes count 0."""
    counts: dict[Node, int] = {}
    for node in reversed(list(tree.nodes())):  # reversed pre-order: children before parents
        steps = [child for child in node.children if child not in rollouts]
        if node in rollouts or node.state in ("finished", "pruned"):
            counts[node] = 0
        elif node.state == "open" or (not steps and not node.is_root):
            counts[node] = 1
        else:
            # A child outside `tree.nodes()` is hidden from this search (the probe of
            # compute-optimal, whose view of the tree leaves it out): no open leaves here.
            counts[node] = sum(counts.get(child, 0) for child in steps)
    return counts


def _is_leaf(node: Node, open_leaves: dict[Node, int]) -> bool:
    """A node selection stops at: one with no child that has open leaves of its own
    (open, or only its completions below it)."""
    return not any(open_leaves.get(child, 0) for child in node.children)
