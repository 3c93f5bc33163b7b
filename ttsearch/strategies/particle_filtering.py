"""Particle filtering (Puri et al., arXiv 2502.01618), particle Gibbs, and entropic particle
filtering (ePF, Red Hat's its_hub), as one frontier policy over the shared search loop.

N particles (partial solutions) advance one step per round. When a round's expansions are
all scored, every particle gets a weight from its PRM reward (the strategy's reduction
over its step scores: `last`, the newest step's score, by default), the weights become
resampling probabilities softmax(w / T), and the particles of the next round are drawn
from them with replacement (multinomial by default, from the search's seed): a particle
drawn k times is expanded once with k samples, a particle drawn 0 times is pruned. The
search ends when no drawn particle is open (every one has finished: EOS, a length limit,
or `max_depth`, whose round samples to EOS).

Finished particles, by default as its_hub does (`resample_finished=True`): they stay in
the pool with their final weight and are redrawn each round, so a good finished solution
gains copies and a weak one can be dropped; the final particle set (with its copies) is
the candidates. With `resample_finished=False` (the paper's code without
`--resample-inactive`) a finished particle leaves the pool for good and keeps its one
slot; the open particles are resampled into the slots left.

Particle Gibbs (`ParticleGibbs`) repeats the filter for `iterations` iterations. From the
second on, one reference particle (drawn from the previous iteration's final set by its
final weight) holds one slot, and the N - 1 free particles are resampled from the free
ones plus the reference's prefix at the current depth (conditional SMC): a free particle
that draws the reference continues from that prefix's node. Candidates are the last
iteration's particles (its_hub's `responses_lst[-1]`).

Entropic particle filtering (`EntropicParticleFiltering`) flattens the resampling
distribution early in the search when it has collapsed: if the effective sample size
ratio ESS/N falls under `ess_threshold` while the progress (round / max_depth) is under
`early_phase`, the weights are divided by an annealing temperature >= 1 (its_hub's
`_temperature_annealing`: from the ESS ratio, the weights' normalised entropy, or a
fixed schedule).

Per-problem state lives in `tree.strategy_state[self]`; draws come from
`tree.random("resample", iteration, round)` and `tree.random("reference", iteration)`, so a
run reproduces whatever order requests complete in. Differences from its_hub and the
paper, and why: docs/methods/particle-filtering.md.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import ClassVar, Literal, get_args

from ttsearch.core.strategy import Expand
from ttsearch.core.tree import Node, SearchTree
from ttsearch.evaluation.aggregation import reduce_scores
from ttsearch.strategies.base import DepthLimitedStrategy, Selection

__all__ = ["EntropicParticleFiltering", "ParticleFiltering", "ParticleGibbs"]

Weighting = Literal["score", "logit"]
Resampling = Literal["multinomial", "systematic"]
Annealing = Literal["ess", "entropy", "base"]
ReferenceWeight = Literal["partial", "final"]

WEIGHTINGS: tuple[str, ...] = get_args(Weighting)
RESAMPLINGS: tuple[str, ...] = get_args(Resampling)
ANNEALINGS: tuple[str, ...] = get_args(Annealing)
REFERENCE_WEIGHTS: tuple[str, ...] = get_args(ReferenceWeight)

_CLIP = 1e-7  # its_hub clips probabilities to [1e-7, 1 - 1e-7] for the logit, ESS and entropy


@dataclass(eq=False)
class _Particles:
    """One problem's particle system (`tree.strategy_state[strategy]`)."""

    iteration: int = 0  # 0-based; particle Gibbs runs several
    round: int = 0  # steps taken by this iteration's particles (its_hub's current_step)
    pending: list[Node] = field(default_factory=list)  # children scored in this round so far
    # Finished free particles holding slots, with their copies: with resample_finished they
    # are redrawn each round; without, each keeps the one slot it finished in.
    finished: dict[Node, int] = field(default_factory=dict)
    reference: Node | None = None  # particle Gibbs: the reference particle's leaf
    result: list[Node] = field(default_factory=list)  # the final particle set (with copies)
    # Per round, for inspection: (iteration, round, {drawn node: copies}) in tree order.
    draws: list[tuple[int, int, dict[Node, int]]] = field(default_factory=list)


def softmax(values: Sequence[float]) -> list[float]:
    """Softmax that never fails: -inf and NaN entries get probability 0; when no entry is
    finite (every weight zero or NaN) the distribution is uniform; +inf entries share it."""
    if not values:
        return []
    top = [i for i, v in enumerate(values) if v == math.inf]
    if top:
        return [1.0 / len(top) if v == math.inf else 0.0 for v in values]
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return [1.0 / len(values)] * len(values)
    peak = max(finite)
    exps = [math.exp(v - peak) if math.isfinite(v) else 0.0 for v in values]
    total = math.fsum(exps)
    return [e / total for e in exps]


def effective_sample_size(probabilities: Sequence[float]) -> float:
    """1 / sum(p^2), with p clipped to [1e-7, 1 - 1e-7] as its_hub does."""
    clipped = [min(max(p, _CLIP), 1 - _CLIP) for p in probabilities]
    return 1.0 / math.fsum(p * p for p in clipped)


def normalized_entropy(probabilities: Sequence[float]) -> float:
    """Entropy of the (clipped) probabilities over log(len): 1 for uniform weights."""
    clipped = [min(max(p, _CLIP), 1 - _CLIP) for p in probabilities]
    entropy = -math.fsum(p * math.log(p) for p in clipped)
    return entropy / math.log(len(clipped)) if len(clipped) > 1 else entropy


@dataclass(frozen=True, kw_only=True)
class ParticleFiltering(DepthLimitedStrategy):
    """N particles, one step per round, resampled from softmax(PRM reward / T).

    `n`: particles (each round samples one step per open particle: at most N samples, as
    beam search's N). `temperature_resample`: T of the resampling softmax. `weighting`:
    the log-weight of a reward r: `score` (r itself, the issue's softmax(score / T)) or
    `logit` (log(r / (1 - r)), its_hub's, i.e. weights proportional to the odds).
    `resample_finished`: finished particles stay in the pool (its_hub) or keep their slot.
    `resampling`: `multinomial` (default) or `systematic`. `selection`: `naive` (argmax of
    the final reward, as the paper and its_hub) or `weighted` (vote over the final
    particles, copies included).
    """

    budget_kind: ClassVar[Literal["sampling", "stepwise"]] = "stepwise"

    selection: Selection = "naive"
    temperature_resample: float = 1.0
    weighting: Weighting = "score"
    resample_finished: bool = True
    resampling: Resampling = "multinomial"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.temperature_resample) and self.temperature_resample > 0):
            raise ValueError(f"{self.name}: temperature_resample must be > 0, got {self.temperature_resample}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"{self.name}: weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        if self.resampling not in RESAMPLINGS:
            raise ValueError(f"{self.name}: resampling must be one of {RESAMPLINGS}, got {self.resampling!r}")

    # -- budget ------------------------------------------------------------------------

    @property
    def num_iterations(self) -> int:
        """Runs of the filter (1; particle Gibbs: `iterations`)."""
        return 1

    @property
    def generation_budget(self) -> int:
        """N particles x iterations: each round samples at most N steps (beam search's N),
        and particle Gibbs runs the filter `iterations` times (its_hub's budget)."""
        return self.n * self.num_iterations

    # -- weights -------------------------------------------------------------------------

    def reward(self, node: Node) -> float | None:
        """The node's reduced step scores; 0.0 without scores; None when a score is NaN or
        outside [0, 1] (a broken PRM): such a particle gets weight 0."""
        if not node.step_scores:
            return 0.0
        if not all(0.0 <= s <= 1.0 for s in node.step_scores):
            return None
        return reduce_scores(node.step_scores, self.reduction)

    def score(self, node: Node) -> float:
        """The final reward; a NaN or out-of-range PRM score counts as 0.0 (the worst)."""
        reward = self.reward(node)
        return 0.0 if reward is None else reward

    def log_weight(self, node: Node) -> float:
        """The particle's log-weight before the softmax: f(reward) / T (-inf when invalid)."""
        reward = self.reward(node)
        if reward is None:
            return -math.inf
        if self.weighting == "logit":
            r = min(max(reward, _CLIP), 1 - _CLIP)
            reward = math.log(r / (1 - r))
        return reward / self.temperature_resample

    def annealing_temperature(self, probabilities: Sequence[float], step: int, draws: int) -> float:
        """ePF's temperature at this step (>= 1); plain particle filtering: 1."""
        return 1.0

    def resampling_probabilities(self, log_weights: Sequence[float], *, step: int, draws: int) -> list[float]:
        """softmax(log-weights), flattened by `annealing_temperature` (ePF only)."""
        probabilities = softmax(log_weights)
        temperature = self.annealing_temperature(probabilities, step, draws)
        if temperature == 1.0:
            return probabilities
        return softmax([w / temperature for w in log_weights])

    def draw(self, probabilities: Sequence[float], k: int, rng: random.Random) -> list[int]:
        """k indices drawn with replacement (multinomial or systematic resampling)."""
        if self.resampling == "multinomial":
            return rng.choices(range(len(probabilities)), weights=probabilities, k=k)
        u = rng.random()
        cumulative = list(accumulate(probabilities))
        cumulative[-1] = max(cumulative[-1], 1.0)  # float sums may end just under 1
        indices, j = [], 0
        for i in range(k):
            position = (i + u) / k
            while position >= cumulative[j]:
                j += 1
            indices.append(j)
        return indices

    # -- the search ----------------------------------------------------------------------

    def start(self, tree: SearchTree) -> Sequence[Expand]:
        tree.strategy_state[self] = _Particles()
        return [self.expand(tree.root, self.n)]

    def update(self, tree: SearchTree, expansion: Expand, children: list[Node]) -> Sequence[Expand]:
        state: _Particles = tree.strategy_state[self]
        state.pending.extend(children)
        if tree.in_flight:  # a round ends when all of its expansions are scored
            return ()
        return self._end_round(tree, state)

    def candidates(self, tree: SearchTree) -> list[Node]:
        """The last iteration's final particle set, copies included, in tree order."""
        state: _Particles | None = tree.strategy_state.get(self)
        return [] if state is None else list(state.result)

    def _reference_weight_node(self, reference: Node, prefix: Node) -> Node:
        """Whose reward weighs the reference particle at this step: its prefix's."""
        return prefix

    def _end_round(self, tree: SearchTree, state: _Particles) -> Sequence[Expand]:
        state.round += 1
        step = state.round
        children = sorted(state.pending, key=lambda node: node.address)
        state.pending = []
        pool: list[Node] = []  # the particles at this step, with copies
        for child in children:
            if child.state == "open" or self.resample_finished:
                pool.append(child)
            else:  # finished, not resampled: it keeps its slot for good
                state.finished[child] = 1
        if self.resample_finished:
            for node, copies in state.finished.items():
                pool.extend([node] * copies)
            state.finished = {}
            pool.sort(key=lambda node: node.address)
        weighing = list(pool)
        free = self.n
        if state.reference is not None:  # particle Gibbs: the reference holds one slot
            free -= 1
            reference = state.reference
            prefix = reference if reference.depth <= step else reference.path()[step]
            if not prefix.is_terminal or self.resample_finished:
                pool.append(prefix)
                weighing.append(self._reference_weight_node(reference, prefix))
        if not self.resample_finished:
            free -= sum(state.finished.values())
        drawn: dict[Node, int] = {}
        if free > 0 and pool:
            log_weights = [self.log_weight(node) for node in weighing]
            probabilities = self.resampling_probabilities(log_weights, step=step, draws=free)
            rng = tree.random("resample", state.iteration, step)
            for index in sorted(self.draw(probabilities, free, rng)):
                drawn[pool[index]] = drawn.get(pool[index], 0) + 1
        state.draws.append((state.iteration, step, dict(drawn)))
        tree.prune([node for node in children if node.state == "open" and node not in drawn])
        expansions = []
        for node, copies in drawn.items():
            if node.is_terminal:
                state.finished[node] = state.finished.get(node, 0) + copies
            else:
                expansions.append(self.expand(node, copies))
        if expansions:
            return expansions
        return self._end_iteration(tree, state)

    def _end_iteration(self, tree: SearchTree, state: _Particles) -> Sequence[Expand]:
        final = [node for node, copies in state.finished.items() for _ in range(copies)]
        if state.reference is not None:
            final.append(state.reference)
        final.sort(key=lambda node: node.address)
        state.result = final
        state.iteration += 1
        state.round = 0
        state.finished = {}
        if state.iteration >= self.num_iterations:
            return ()
        if not final:  # nothing finished (every sample dropped): start afresh
            state.reference = None
            return [self.expand(tree.root, self.n)]
        # The next reference: drawn by final weight (plain softmax, no annealing), as its_hub.
        probabilities = softmax([self.log_weight(node) for node in final])
        rng = tree.random("reference", state.iteration - 1)
        (index,) = rng.choices(range(len(final)), weights=probabilities, k=1)
        state.reference = final[index]
        return [self.expand(tree.root, self.n - 1)]


@dataclass(frozen=True, kw_only=True)
class ParticleGibbs(ParticleFiltering):
    """Particle filtering repeated `iterations` times around one reference particle.

    `n` particles per iteration (one of them the reference from the second iteration on),
    so `generation_budget` = n x iterations, its_hub's budget. `reference_weight`: the
    reference's weight at step t is its prefix's reward at depth t (`partial`, conditional
    SMC and the intent of its_hub's fix #54) or its final reward (`final`, what its_hub's
    code computes, since the reference is a stopped particle).
    """

    iterations: int = 2
    reference_weight: ReferenceWeight = "partial"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.iterations < 1:
            raise ValueError(f"{self.name}: iterations must be >= 1, got {self.iterations}")
        if self.iterations > 1 and self.n < 2:
            raise ValueError(f"{self.name}: n must be >= 2 (a reference and a free particle), got {self.n}")
        if self.reference_weight not in REFERENCE_WEIGHTS:
            raise ValueError(
                f"{self.name}: reference_weight must be one of {REFERENCE_WEIGHTS}, got {self.reference_weight!r}"
            )

    @property
    def num_iterations(self) -> int:
        return self.iterations

    def _reference_weight_node(self, reference: Node, prefix: Node) -> Node:
        return reference if self.reference_weight == "final" else prefix


@dataclass(frozen=True, kw_only=True)
class EntropicParticleFiltering(ParticleFiltering):
    """Particle filtering with entropic annealing (its_hub's `EntropicParticleFiltering`).

    While progress = round / max_depth < `early_phase` and ESS / draws < `ess_threshold`,
    the log-weights are divided by a temperature >= 1: `ess`: (1 - progress) / (ESS / draws);
    `entropy`: 1 / (H + (1 - H) progress), H the weights' normalised entropy; `base`:
    2 - progress. Systematic resampling by default, as its_hub's ePF.
    """

    resampling: Resampling = "systematic"
    annealing: Annealing = "ess"
    ess_threshold: float = 0.5
    early_phase: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.annealing not in ANNEALINGS:
            raise ValueError(f"{self.name}: annealing must be one of {ANNEALINGS}, got {self.annealing!r}")
        if not 0 < self.ess_threshold <= 1:
            raise ValueError(f"{self.name}: ess_threshold must be in (0, 1], got {self.ess_threshold}")
        if not 0 <= self.early_phase <= 1:
            raise ValueError(f"{self.name}: early_phase must be in [0, 1], got {self.early_phase}")

    def annealing_temperature(self, probabilities: Sequence[float], step: int, draws: int) -> float:
        if draws <= 1 or not probabilities:
            return 1.0
        progress = step / self.max_depth
        ratio = effective_sample_size(probabilities) / draws
        if ratio >= self.ess_threshold or progress >= self.early_phase:
            return 1.0
        if self.annealing == "ess":
            value = (1.0 - progress) / ratio
        elif self.annealing == "entropy":
            entropy = normalized_entropy(probabilities)
            beta = entropy + (1.0 - entropy) * progress
            value = 1.0 / beta if beta > 0 else 1.0
        else:
            value = 2.0 - progress
        return max(1.0, value)
