"""A `SearchService` on the scripted in-process backends, and an HTTP client for its app.

The policy writes `STEPS` steps tagged with their PRM score (`[p=0.xyz]`, which the scripted
verifier reads back), then a boxed answer: sample i of a request answers `ANSWERS[i % 3]`
with step scores that rise with i, so tests know which candidate a search selects.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from ttsearch.core.backend import SampleRequest
from ttsearch.serve import SearchService, ServiceOptions, create_app
from ttsearch.study.recipe import Recipe, parse_recipe
from ttsearch.testing.scripted import EOS, ScriptCall, ScriptedPolicy, ScriptedVerifier

STEPS = 2
ANSWERS = ("7", "8", "7")
API_KEY = "test-key"

RECIPE: dict[str, Any] = {
    "name": "serve-test",
    "policy": {"model": "scripted"},
    "prm": {"model": "scripted-prm", "format": "math_shepherd"},
    "dataset": {"source": "toy", "end": 1},
    "sampling": {"max_tokens": 200, "temperature": 1.0},
    "strategies": [
        {"strategy": "best_of_n", "n": [4], "reduction": "min"},
        {"strategy": "beam", "n": [4, 8], "width": 2},
    ],
}


def recipe() -> Recipe:
    return parse_recipe(RECIPE)


def script(call: ScriptCall) -> str:
    """Step d of sample i: "d{d}i{i} [p=...]"; after `STEPS` steps the boxed answer."""
    if "boom" in call.problem:
        raise RuntimeError("the scripted model broke on this problem")
    depth = call.text.count("\n\n")
    tag = f"[p={0.5 + 0.05 * call.index:.3f}]"
    out = []
    for d in range(depth, STEPS):
        out.append(f"d{d}i{call.index} {tag}\n\n")
        if call.request.stop:
            break
    if depth >= STEPS or not call.request.stop:
        out.append(f"so \\boxed{{{ANSWERS[call.index % 3]}}} {tag}{EOS}")
    return "".join(out)


def make_service(
    *,
    delay: Callable[[SampleRequest], Awaitable[None]] | None = None,
    max_model_len: int = 100_000,
    options: ServiceOptions | None = None,
) -> SearchService:
    policy = ScriptedPolicy(script, max_model_len=max_model_len, delay=delay)
    return SearchService(policy, ScriptedVerifier(), recipe=recipe(), options=options or ServiceOptions())


def client(
    service: SearchService, *, api_key: str | None = API_KEY, progress_interval: float = 0.5
) -> httpx.AsyncClient:
    app = create_app(service, api_key=api_key, progress_interval=progress_interval)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://serve.test", headers=headers)
