"""Configuration shared by the built-in strategies (the interface is `ttsearch.core.strategy`)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from ttsearch.core.strategy import Expand, Strategy
from ttsearch.core.tree import Node
from ttsearch.evaluation.aggregation import REDUCTIONS, SELECTION_METHODS, Reduction
from ttsearch.evaluation.aggregation import SelectionMethod as Selection

__all__ = ["DepthLimitedStrategy", "Expand", "SampledStrategy", "Selection", "StepwiseStrategy", "Strategy"]


@dataclass(frozen=True, kw_only=True)
class SampledStrategy(Strategy):
    """Configuration shared by the built-in strategies: N candidates sampled at a temperature."""

    budget_kind: ClassVar[Literal["sampling", "stepwise"]] = "sampling"

    n: int
    temperature: float = 0.8
    top_p: float = 1.0
    reduction: Reduction = "last"
    selection: Selection = "weighted"

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {self.reduction!r}")
        if self.selection not in SELECTION_METHODS:
            raise ValueError(f"selection must be one of {SELECTION_METHODS}, got {self.selection!r}")


@dataclass(frozen=True, kw_only=True)
class DepthLimitedStrategy(SampledStrategy):
    """Strategies that grow solutions one step at a time: the expansion that would reach
    `max_depth` samples to EOS instead of stopping after one step (`expand`)."""

    budget_kind: ClassVar[Literal["sampling", "stepwise"]] = "stepwise"

    max_depth: int = 40

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_depth < 1:
            raise ValueError(f"{self.name}: max_depth must be >= 1, got {self.max_depth}")

    def expand(self, node: Node, n: int, *, lookahead: int = 0, group: Hashable = None) -> Expand:
        return Expand(
            node,
            n=n,
            temperature=self.temperature,
            top_p=self.top_p,
            to_completion=node.depth + 1 >= self.max_depth,
            lookahead=lookahead,
            group=group,
        )


@dataclass(frozen=True, kw_only=True)
class StepwiseStrategy(DepthLimitedStrategy):
    """Shared configuration of beam-style strategies: `width` is the beam width M (N must
    be a multiple of it)."""

    width: int = 4

    @classmethod
    def budget_unit(cls, options: Mapping[str, Any]) -> int:
        return int(options.get("width", cls.width))

    @property
    def live_prefixes(self) -> int:
        """N/M kept beams: the M children of one beam share its prefix."""
        return max(1, self.n // self.width)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.width < 1 or self.n % self.width:
            raise ValueError(f"{self.name}: width must be >= 1 and divide n, got n={self.n}, width={self.width}")
