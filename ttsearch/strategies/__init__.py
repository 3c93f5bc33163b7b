"""Search strategies: frontier-selection policies over the shared engine loop."""

from ttsearch.strategies.base import Expand, Strategy
from ttsearch.strategies.beam import BeamSearch, LookaheadSearch
from ttsearch.strategies.dvts import DVTS
from ttsearch.strategies.sampling import BestOfN, MajorityVoting

__all__ = ["DVTS", "BeamSearch", "BestOfN", "Expand", "LookaheadSearch", "MajorityVoting", "Strategy"]
