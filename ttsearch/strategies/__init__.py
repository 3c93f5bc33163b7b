"""Search strategies: frontier-selection policies over the core's one search loop.

The interface (`Strategy`, `Expand`) is `ttsearch.core.strategy`; `registry` names every
built-in strategy for recipes and the CLI.
"""

from ttsearch.core.strategy import Expand, Strategy
from ttsearch.strategies.adaptive import AdaptiveBestOfN
from ttsearch.strategies.beam import BeamSearch, LookaheadSearch
from ttsearch.strategies.compute_optimal import ComputeOptimal
from ttsearch.strategies.dvts import DVTS
from ttsearch.strategies.mcts import MCTS, MCTSState
from ttsearch.strategies.particle_filtering import EntropicParticleFiltering, ParticleFiltering, ParticleGibbs
from ttsearch.strategies.policy_table import PolicyChoice, PolicyTable
from ttsearch.strategies.rebase import REBASE
from ttsearch.strategies.revisions import Revisions
from ttsearch.strategies.sampling import BestOfN, MajorityVoting

__all__ = [
    "DVTS",
    "EntropicParticleFiltering",
    "AdaptiveBestOfN",
    "BeamSearch",
    "BestOfN",
    "ComputeOptimal",
    "Expand",
    "LookaheadSearch",
    "MCTS",
    "MCTSState",
    "MajorityVoting",
    "ParticleFiltering",
    "ParticleGibbs",
    "PolicyChoice",
    "PolicyTable",
    "REBASE",
    "Revisions",
    "Strategy",
]
