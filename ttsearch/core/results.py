"""What a search returns: scored candidate solutions, the selected answer, and the cost."""

from __future__ import annotations

from dataclasses import dataclass

from ttsearch.core.backend import FinishReason
from ttsearch.core.scheduler import Usage
from ttsearch.core.tree import Node, SearchTree
from ttsearch.evaluation.aggregation import SelectionMethod, candidate_keys, select_answer
from ttsearch.evaluation.extraction import extract_answer


@dataclass(frozen=True, slots=True)
class Candidate:
    """One final solution of a search."""

    text: str  # the generated solution (no prompt)
    answer: str | None  # extracted final answer (last \boxed{...}), None if there is none
    step_scores: tuple[float, ...]  # PRM score per step (empty without a verifier)
    score: float  # step scores reduced with the strategy's reduction (0.0 without scores)
    finish: FinishReason  # "eos": the model ended it; "length": cut at a limit
    num_tokens: int  # generated tokens of this solution
    node_id: int  # its node in `SearchResult.tree`

    @classmethod
    def from_node(cls, node: Node, score: float) -> Candidate:
        assert node.finish is not None, "a candidate is never the root"
        text = node.text
        return cls(
            text=text,
            answer=extract_answer(text),
            step_scores=node.step_scores,
            score=score,
            finish=node.finish,
            num_tokens=node.num_generated_tokens,
            node_id=node.id,
        )


@dataclass(frozen=True, slots=True)
class SearchResult:
    """The outcome of searching one problem."""

    problem: str
    strategy: str  # the strategy's name
    selection: SelectionMethod  # how `answer` was picked from the candidates
    answer: str | None  # the selected final answer
    candidates: tuple[Candidate, ...]
    usage: Usage
    tree: SearchTree | None  # the whole search tree (None when the searcher drops trees)
    index: int | None = None  # position in the input of `Searcher.solve_all`
    error: str | None = None  # set when this problem failed alone (then no candidates)

    @property
    def ok(self) -> bool:
        return self.error is None

    def select(self, method: SelectionMethod) -> str | None:
        """The answer another selection method would pick from the same candidates."""
        return pick_answer(method, self.candidates)


def pick_answer(method: SelectionMethod, candidates: tuple[Candidate, ...]) -> str | None:
    answers = [c.answer for c in candidates]
    rewards = None if method == "majority" else [c.score for c in candidates]
    chosen = select_answer(method, answers, rewards)
    return None if chosen is None else chosen.answer


def selected_index(result: SearchResult) -> int | None:
    """The candidate that stands for the result's answer (what a service shows and a tree
    view highlights): the best scored of the selected answer's group (the first, where
    scores tie or there are none); with no answer at all, the best scored candidate; None
    without candidates."""
    candidates = result.candidates
    if not candidates:
        return None
    answers = [c.answer for c in candidates]
    chosen = None
    if any(a is not None for a in answers):
        rewards = None if result.selection == "majority" else [c.score for c in candidates]
        chosen = select_answer(result.selection, answers, rewards)
    keys = candidate_keys(answers)
    group = [i for i, key in enumerate(keys) if chosen is None or key == chosen.key]
    return max(group, key=lambda i: (candidates[i].score, -i))
