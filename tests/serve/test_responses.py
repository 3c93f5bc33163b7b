"""Which candidate a response shows, and the body when a search ends without one."""

from __future__ import annotations

from ttsearch.core.results import Candidate, SearchResult
from ttsearch.core.scheduler import Usage
from ttsearch.core.search import SearchLimits
from ttsearch.evaluation.aggregation import SelectionMethod
from ttsearch.serve import parse_request
from ttsearch.serve.responses import ResponseIds, completion_body, final_chunks, selected_index
from ttsearch.serve.service import PlannedSearch, SearchOutcome
from ttsearch.strategies import BestOfN


def result(answers: list[str | None], scores: list[float], selection: SelectionMethod = "weighted") -> SearchResult:
    candidates = tuple(Candidate(f"text {i}", a, (s,), s, "eos", 3, i) for i, (a, s) in enumerate(zip(answers, scores)))
    return SearchResult("p", "BestOfN", selection, None, candidates, Usage(generated_tokens=9), None)


def test_the_shown_candidate_is_the_best_scored_of_the_selected_answer() -> None:
    # Weighted: "1" (0.3 + 0.35 = 0.65) beats "2" (0.6); its better candidate is index 2.
    assert selected_index(result(["1", "2", "1"], [0.3, 0.6, 0.35])) == 2
    assert selected_index(result(["1", "2", "1"], [0.3, 0.6, 0.35], "naive")) == 1
    # Majority: "1" wins 2 to 1; scores still pick among its candidates (ties: the first).
    assert selected_index(result(["1", "2", "1"], [0.0, 0.0, 0.0], "majority")) == 0
    assert selected_index(result([None, "3", "1"], [0.9, 0.1, 0.2], "naive")) == 2
    # No answer anywhere: the best scored candidate; no candidate: nothing to show.
    assert selected_index(result([None, None], [0.2, 0.4])) == 1
    assert selected_index(result([], [])) is None


def test_a_search_without_candidates_answers_an_empty_cut_off_choice() -> None:
    request = parse_request("chat", {"model": "best_of_n-4", "messages": [{"role": "user", "content": "p"}]})
    plan = PlannedSearch(request, BestOfN(n=4), False, 0, SearchLimits(), prompt_tokens=5)
    outcome = SearchOutcome(plan, result([], []), queue_seconds=0.0)
    ids = ResponseIds("chat", "best_of_n-4")
    body = completion_body(ids, outcome)
    assert body["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": ""}, "finish_reason": "length", "logprobs": None}
    ]
    assert body["search"]["selected"] is None and body["search"]["candidates"] == []
    assert body["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": 9,
        "total_tokens": 14,
        "prm_tokens": 0,
        "prm_computed_tokens": 0,
        "prm_cached_tokens": 0,
    }
    *_, last, usage = final_chunks(ids, outcome, include_usage=True)
    assert last["choices"][0]["finish_reason"] == "length" and "search" in last and usage["usage"] == body["usage"]
