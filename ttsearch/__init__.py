"""ttsearch: test-time compute scaling for LLM math reasoning.

    from ttsearch import Searcher, VLLMPolicy, VLLMVerifier, RLHFLOW, BeamSearch

The search core (`ttsearch.core`) runs search strategies (`ttsearch.strategies`) on
backends (`ttsearch.backends`: vLLM in-process or vLLM servers);
`ttsearch.evaluation` grades answers and computes accuracy@k. vLLM itself is imported
only when an engine is started.
"""

from ttsearch.backends.prm_formats import MATH_SHEPHERD, QWEN_PRM, RLHFLOW, PrmFormat
from ttsearch.backends.vllm.policy import VLLMPolicy
from ttsearch.backends.vllm.verifier import VLLMVerifier
from ttsearch.core.results import Candidate, SearchResult
from ttsearch.core.scheduler import Usage
from ttsearch.core.search import SearchLimits
from ttsearch.core.searcher import Searcher, SearchJob
from ttsearch.errors import BackendError, ProblemError, SearchError
from ttsearch.evaluation import Problem, extract_answer, is_equivalent, load_math500
from ttsearch.strategies import DVTS, BeamSearch, BestOfN, Expand, LookaheadSearch, MajorityVoting, Strategy

__version__ = "0.1.0"

__all__ = [
    "DVTS",
    "MATH_SHEPHERD",
    "QWEN_PRM",
    "RLHFLOW",
    "BackendError",
    "BeamSearch",
    "BestOfN",
    "Candidate",
    "Expand",
    "LookaheadSearch",
    "MajorityVoting",
    "PrmFormat",
    "Problem",
    "ProblemError",
    "SearchError",
    "SearchJob",
    "SearchLimits",
    "SearchResult",
    "Searcher",
    "Strategy",
    "Usage",
    "VLLMPolicy",
    "VLLMVerifier",
    "extract_answer",
    "is_equivalent",
    "load_math500",
]
