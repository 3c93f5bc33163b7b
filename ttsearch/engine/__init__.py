"""The search engine: the per-problem tree, the shared search loop, the scheduler and the backends."""

from ttsearch.engine.backend import (
    BackendError,
    Policy,
    PromptTooLongError,
    Sample,
    SampleRequest,
    StepScores,
    Verifier,
)
from ttsearch.engine.prm_formats import MATH_SHEPHERD, QWEN_PRM, RLHFLOW, PrmFormat
from ttsearch.engine.results import Candidate, SearchResult
from ttsearch.engine.scheduler import Usage
from ttsearch.engine.search import ProblemError, SearchLimits, split_steps
from ttsearch.engine.searcher import SearchError, Searcher, SearchJob
from ttsearch.engine.tree import Node, SearchTree
from ttsearch.engine.vllm_policy import VLLMPolicy
from ttsearch.engine.vllm_verifier import VLLMVerifier

__all__ = [
    "MATH_SHEPHERD",
    "QWEN_PRM",
    "RLHFLOW",
    "BackendError",
    "Candidate",
    "Node",
    "Policy",
    "PrmFormat",
    "ProblemError",
    "PromptTooLongError",
    "Sample",
    "SampleRequest",
    "SearchError",
    "SearchLimits",
    "SearchResult",
    "SearchTree",
    "Searcher",
    "SearchJob",
    "StepScores",
    "Usage",
    "VLLMPolicy",
    "VLLMVerifier",
    "Verifier",
    "split_steps",
]
