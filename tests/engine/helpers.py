"""Builders for engine tests: scripted worlds with known step scores."""

from __future__ import annotations

from collections.abc import Callable

from ttsearch.core.search import SearchLimits
from ttsearch.core.searcher import Searcher
from ttsearch.testing.scripted import EOS, ScriptCall, ScriptedPolicy, ScriptedVerifier


def depth_of(text: str) -> int:
    """Steps already written (each ends with the separator)."""
    return text.count("\n\n")


def stepwise_script(
    score: Callable[[int, int, str], float],
    *,
    steps: int = 3,
    answer: Callable[[str, int], str] = lambda text, i: "7",
) -> Callable[[ScriptCall], str]:
    """A model that writes `steps` steps, then a boxed answer and EOS.

    Step d of sample i reads "d{d}i{i} [p=score(d, i, text)]"; the verifier's default
    script reads that tag back, so tests control every step score exactly.
    """

    def script(call: ScriptCall) -> str:
        d = depth_of(call.text)
        out = []
        for k in range(d, steps):
            p = score(k, call.index, call.text)
            out.append(f"d{k}i{call.index} [p={p:.3f}]\n\n")
            if call.request.stop:  # step mode: the engine cuts after the first step anyway
                break
        if d >= steps or not call.request.stop:
            out.append(f"\\boxed{{{answer(call.text, call.index)}}}{EOS}")
        return "".join(out)

    return script


def make_searcher(script: Callable[[ScriptCall], str], *, verifier: bool = True, **kwargs) -> Searcher:
    limits = kwargs.pop("limits", SearchLimits(max_solution_tokens=10_000))
    policy = ScriptedPolicy(script, max_model_len=kwargs.pop("max_model_len", 100_000), delay=kwargs.pop("delay", None))
    return Searcher(policy, ScriptedVerifier() if verifier else None, limits=limits, **kwargs)
