"""ttsearch: test-time compute scaling for LLM math reasoning.

    from ttsearch import Searcher, VLLMPolicy, VLLMVerifier, RLHFLOW, BeamSearch

The engine (`ttsearch.engine`) runs search strategies (`ttsearch.strategies`) on vLLM;
`ttsearch.evaluation` grades answers and computes accuracy@k. vLLM itself is imported
only when an engine is started.
"""

from ttsearch.engine import (
    MATH_SHEPHERD,
    QWEN_PRM,
    RLHFLOW,
    BackendError,
    Candidate,
    PrmFormat,
    ProblemError,
    SearchError,
    SearchLimits,
    SearchResult,
    Searcher,
    SearchJob,
    Usage,
    VLLMPolicy,
    VLLMVerifier,
)
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
    "SearchLimits",
    "SearchResult",
    "Searcher",
    "SearchJob",
    "Strategy",
    "Usage",
    "VLLMPolicy",
    "VLLMVerifier",
    "extract_answer",
    "is_equivalent",
    "load_math500",
]
