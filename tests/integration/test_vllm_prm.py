"""`VLLMVerifier` against real vLLM engines, checked against Hugging Face transformers.

Three engines per module, started side by side (fp32, so vLLM and the reference agree to
~1e-7): a tiny random Llama PRM as a generation engine (RLHFlow and Math-Shepherd formats,
generative scorer, plus RLHFlow as an outcome model), the same Llama as a STEP-pooling
classifier over its "+" / "-" logits (Math-Shepherd), and a tiny native
`Qwen2ForProcessRewardModel` (STEP pooling at "<extra_0>"). The reference scores come
from a transformers forward pass over the whole text, at positions found here
independently of the encoder (the step tag; the "\\n\\n" ending an assistant header).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.integration.engine_state import unfinished_requests
from ttsearch.backends.prm_formats import MATH_SHEPHERD, QWEN_PRM, RLHFLOW, PrmFormat, format_text
from ttsearch.core.backend import StepScores, Verifier
from ttsearch.errors import BackendError, PromptTooLongError

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

MAX_MODEL_LEN = 1024
ENGINE = dict(dtype="float32", max_model_len=MAX_MODEL_LEN, enforce_eager=True, kv_cache_memory_bytes=32 << 20)
TOLERANCE = 1e-4

# Llama 3 ids
START_HEADER, END_HEADER, ASSISTANT, DOUBLE_NEWLINE = 128006, 128007, 78191, 271
PLUS, MINUS, TAG = 10, 12, 116624  # "+", "-", " ки"

LONG_QUESTION = (
    "A farmer has 17 sheep, 23 goats and twice as many chickens as sheep and goats together. "
    "Each sheep eats 2 kg of hay a day, each goat 1.5 kg, and the chickens share 3 kg of grain. "
) * 4 + "How many kilograms of feed does the farm use in a week?"
EXAMPLES: list[tuple[str, list[str]]] = [
    ("What is 1+1?", ["1+1=2.", "The answer is $\\boxed{2}$."]),
    (
        "What is the sum of 12 and 30?",
        ["Step 1: Add the tens: 10 + 30 = 40. ", "Step 2: Add the ones: 2 + 0 = 2.\n", "So 42.", "4"],
    ),
    (
        LONG_QUESTION,  # > 128 tokens: crosses vLLM's CPU prefix-cache block size
        [f"## Step {k}: compute part {k} of the feed, {k * 7} kg in total." for k in range(1, 9)],
    ),
]


@contextlib.contextmanager
def _worker_in_engine_process() -> Iterator[None]:
    """While engines start: run vLLM's model worker inside its engine-core process instead
    of a process of its own (VLLM_ENABLE_V1_MULTIPROCESSING=0; on CPU it halves start-up,
    ~25 s instead of ~50 s per engine on a loaded 2-core machine). Engines started before
    or after (the policy's) are unaffected; scores are checked against transformers anyway."""
    key = "VLLM_ENABLE_V1_MULTIPROCESSING"
    saved = os.environ.get(key)
    os.environ[key] = "0"
    try:
        yield
    finally:
        if saved is None:
            del os.environ[key]
        else:
            os.environ[key] = saved


# -- models and engines -----------------------------------------------------------------


@pytest.fixture(scope="module")
def llama_prm_dir(tmp_path_factory: pytest.TempPathFactory, llama3_tokenizer_dir: Path) -> Path:
    from tools.tiny_prms import build_tiny_llama_prm

    return build_tiny_llama_prm(tmp_path_factory.mktemp("tiny-llama-prm"), tokenizer_dir=llama3_tokenizer_dir)


@pytest.fixture(scope="module")
def qwen_prm_dir(tmp_path_factory: pytest.TempPathFactory, qwen2_tokenizer_dir: Path) -> Path:
    from tools.tiny_prms import build_tiny_qwen2_prm

    return build_tiny_qwen2_prm(tmp_path_factory.mktemp("tiny-qwen-prm"), tokenizer_dir=qwen2_tokenizer_dir)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def verifiers(llama_prm_dir: Path, qwen_prm_dir: Path, no_leftover_processes) -> AsyncIterator[dict[str, Any]]:
    # Import vLLM's engine modules here, not first inside from_pretrained: on CPU installs
    # (no torchcodec) vLLM keeps the ImportError's traceback, and with it the importing
    # frames and their locals (an engine) for the life of the process.
    pytest.importorskip("vllm.engine.arg_utils")
    pytest.importorskip("vllm.v1.engine.async_llm")
    from ttsearch.backends.vllm.verifier import VLLMVerifier

    async with no_leftover_processes(15):
        started = time.monotonic()
        with _worker_in_engine_process():
            built = await asyncio.gather(
                asyncio.to_thread(
                    VLLMVerifier.from_pretrained, llama_prm_dir, format=RLHFLOW, mode="generative", **ENGINE
                ),
                asyncio.to_thread(
                    VLLMVerifier.from_pretrained, llama_prm_dir, format=MATH_SHEPHERD, mode="pooling", **ENGINE
                ),
                asyncio.to_thread(VLLMVerifier.from_pretrained, qwen_prm_dir, format=QWEN_PRM, **ENGINE),
                return_exceptions=True,
            )
        owned = [v for v in built if isinstance(v, VLLMVerifier)]
        if len(owned) < len(built):
            await asyncio.gather(*(v.close() for v in owned))
            raise next(e for e in built if isinstance(e, BaseException))
        print(f"\n3 PRM engines started in {time.monotonic() - started:.1f} s")
        generative, shepherd_pooling, qwen = owned
        # Further verifiers on the generation engine: they do not own it.
        by_name: dict[str, Any] = {
            "rlhflow-generative": generative,
            "shepherd-generative": VLLMVerifier(generative.engine, generative.tokenizer, format=MATH_SHEPHERD),
            "shepherd-pooling": shepherd_pooling,
            "qwen-pooling": qwen,
            "rlhflow-orm": VLLMVerifier(generative.engine, generative.tokenizer, format=RLHFLOW.as_outcome_model()),
        }
        yield by_name
        # close() shuts each owned engine down on this loop and terminates vLLM's ZMQ context
        # (vllm_env.shutdown_engine), so collecting the engines later warns of nothing.
        for v in by_name.values():
            await v.close()


# -- the Hugging Face reference ---------------------------------------------------------


@pytest.fixture(scope="module")
def hf_reference(llama_prm_dir: Path, qwen_prm_dir: Path, verifiers: dict[str, Any]):
    """`reference(format, question, steps) -> [score per step]` from transformers (fp32, CPU)."""
    import torch
    from transformers import LlamaForCausalLM

    from tools.tiny_prms import load_tiny_qwen2_prm_reference

    llama = LlamaForCausalLM.from_pretrained(str(llama_prm_dir), dtype=torch.float32).eval()
    qwen = load_tiny_qwen2_prm_reference(qwen_prm_dir)
    llama_tok = verifiers["rlhflow-generative"].tokenizer
    qwen_tok = verifiers["qwen-pooling"].tokenizer
    extra_0 = qwen_tok.convert_tokens_to_ids("<extra_0>")

    def llama_scores(text: str, positions_of) -> list[float]:
        ids = llama_tok.encode(text, add_special_tokens=False)
        if not text.startswith("<|begin_of_text|>"):
            ids = [llama_tok.bos_token_id, *ids]
        with torch.no_grad():
            logits = llama(torch.tensor([ids])).logits[0]
        return [logits[p, [PLUS, MINUS]].softmax(-1)[0].item() for p in positions_of(ids)]

    def shepherd_positions(ids: list[int]) -> list[int]:
        return [i for i, t in enumerate(ids) if t == TAG]

    def rlhflow_positions(ids: list[int]) -> list[int]:
        header = [START_HEADER, ASSISTANT, END_HEADER, DOUBLE_NEWLINE]
        return [i for i in range(3, len(ids)) if ids[i - 3 : i + 1] == header]

    def reference(fmt: PrmFormat, question: str, steps: list[str]) -> list[float]:
        if fmt.outcome_only:  # each prefix scored as a whole solution
            plain = replace(fmt, outcome_only=False)
            return [reference(plain, question, ["\n\n".join(steps[: k + 1])])[0] for k in range(len(steps))]
        text = format_text(fmt, question, steps)
        if fmt.layout == "tagged":
            return llama_scores(text, shepherd_positions)
        if fmt.layout == "turns":
            return llama_scores(text, rlhflow_positions)
        ids = qwen_tok.encode(text, add_special_tokens=False)
        probs = qwen(ids)
        return [probs[i, fmt.positive_label].item() for i, t in enumerate(ids) if t == extra_0]

    return reference


PRM_NAMES = ["rlhflow-generative", "shepherd-generative", "shepherd-pooling", "qwen-pooling"]


# -- agreement with the reference ---------------------------------------------------------


@pytest.mark.parametrize("name", [*PRM_NAMES, "rlhflow-orm"])
async def test_scores_match_hf_reference(name: str, verifiers, hf_reference):
    verifier = verifiers[name]
    assert isinstance(verifier, Verifier)
    worst, scores = 0.0, []
    for question, steps in EXAMPLES:
        result = await verifier.score(question, steps)
        expected = hf_reference(verifier.format, question, steps)
        assert len(result.scores) == len(steps) == len(expected)
        assert all(0.0 <= s <= 1.0 for s in result.scores)
        worst = max(worst, *(abs(a - b) for a, b in zip(result.scores, expected)))
        assert result.scores == pytest.approx(expected, abs=TOLERANCE), (question[:30], steps)
        assert result.prompt_tokens > 0
        scores += result.scores
    print(
        f"\n{name}: max |vLLM - HF| = {worst:.2e} over {len(scores)} scores, range {min(scores):.3f}..{max(scores):.3f}"
    )
    assert max(scores) - min(scores) > 0.01  # the tiny models' scores are not all alike


@pytest.mark.parametrize("name", [*PRM_NAMES, "rlhflow-orm"])
async def test_first_returns_only_the_newer_scores(name: str, verifiers):
    verifier = verifiers[name]
    question, steps = EXAMPLES[2]
    full = await verifier.score(question, steps)
    for first in (1, 4, len(steps) - 1):
        newer = await verifier.score(question, steps, first=first)
        assert newer.scores == pytest.approx(full.scores[first:], abs=1e-5)
        if verifier.mode == "generative":  # at most one request per new step (the memo may
            assert newer.requests <= len(steps) - first  # hold them all: earlier tests scored these)
    assert await verifier.score(question, steps, first=len(steps)) == StepScores((), 0)
    with pytest.raises(ValueError, match="first"):
        await verifier.score(question, steps, first=len(steps) + 1)


@pytest.mark.parametrize("name", PRM_NAMES)
async def test_text_ending_with_the_separator_gets_no_empty_step(name: str, verifiers, hf_reference):
    verifier = verifiers[name]
    question, solution = "What is 2*3?", "2*3 = 6.\n\nThe answer is 6.\n\n"
    steps = [s for s in solution.split("\n\n") if s.strip()]  # as the search engine splits
    result = await verifier.score(question, steps)
    assert len(result.scores) == 2
    assert result.scores == pytest.approx(hf_reference(verifier.format, question, steps), abs=TOLERANCE)


# -- concurrency, cancellation, errors ----------------------------------------------------


async def test_many_concurrent_calls_agree_with_sequential_ones(verifiers):
    calls = [(name, q, steps[:k]) for name in PRM_NAMES for q, steps in EXAMPLES for k in range(1, len(steps) + 1)]
    sequential = [await verifiers[name].score(q, s) for name, q, s in calls]
    concurrent = await asyncio.gather(*(verifiers[name].score(q, s) for name, q, s in calls))
    assert len(calls) > 40
    for a, b in zip(sequential, concurrent):
        assert b.scores == pytest.approx(a.scores, abs=1e-5)


class _CountingEngine:
    """Passes everything to the engine; counts the requests open at once."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self.open = 0
        self.peak = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    async def generate(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        self.open += 1
        self.peak = max(self.peak, self.open)
        try:
            async for output in self._engine.generate(*args, **kwargs):
                yield output
        finally:
            self.open -= 1


async def test_max_in_flight_bounds_open_requests(verifiers):
    from ttsearch.backends.vllm.verifier import VLLMVerifier

    base = verifiers["rlhflow-generative"]
    counting = _CountingEngine(base.engine)
    verifier = VLLMVerifier(counting, base.tokenizer, format=RLHFLOW, max_in_flight=3)
    question, steps = EXAMPLES[1]
    # Questions that differ in their first tokens: the prefix gate runs the requests of one
    # input one after another when they share full KV blocks (always so with the GPU's
    # 16-token blocks), so only distinct inputs can fill the limit.
    questions = [f"Variant {i}. {question}" for i in range(8)]
    results = await asyncio.gather(*(verifier.score(q, steps) for q in questions))
    assert counting.peak == 3  # 8 calls x 4 steps = 32 requests, never more than 3 open
    for q, r in zip(questions, results):
        assert r.scores == pytest.approx((await base.score(q, steps)).scores, abs=1e-5)
    expected = await base.score(question, steps)
    await verifier.close()  # does not own the engine
    with pytest.raises(BackendError, match="closed"):
        await verifier.score(question, steps)
    assert (await base.score(question, steps)).scores == pytest.approx(expected.scores, abs=1e-5)


@pytest.mark.parametrize("name", ["rlhflow-generative", "qwen-pooling"])
async def test_cancellation_aborts_the_requests(name: str, verifiers):
    verifier = verifiers[name]
    engine = verifier.engine
    question, steps = EXAMPLES[2]
    tasks = [asyncio.create_task(verifier.score(question + f" (variant {i})", steps)) for i in range(16)]
    deadline = time.monotonic() + 10
    while not unfinished_requests(engine) and time.monotonic() < deadline:
        await asyncio.sleep(0)  # until the first requests reach the engine
    for t in tasks:
        t.cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert any(isinstance(o, asyncio.CancelledError) for o in outcomes)
    deadline = time.monotonic() + 10
    while unfinished_requests(engine) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert unfinished_requests(engine) == 0
    assert len((await verifier.score(question, steps)).scores) == len(steps)  # still serving


@pytest.mark.parametrize("name", PRM_NAMES)
async def test_too_long_input_raises_prompt_too_long(name: str, verifiers):
    verifier = verifiers[name]
    question = "Count the words. " + "word " * 1100
    message = rf"PRM input of \d+ tokens.* exceeds the verifier's max_model_len of {MAX_MODEL_LEN}"
    with pytest.raises(PromptTooLongError, match=message) as info:
        await verifier.score(question, ["one step"])
    assert isinstance(info.value, BackendError)
    assert len((await verifier.score(*EXAMPLES[0])).scores) == 2  # nothing was sent; still serving


class _FailingEngine(_CountingEngine):
    async def generate(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise RuntimeError("simulated engine failure")
        yield  # pragma: no cover - makes this an async generator


async def test_engine_failures_become_backend_errors(verifiers):
    from ttsearch.backends.vllm.verifier import VLLMVerifier

    base = verifiers["rlhflow-generative"]
    verifier = VLLMVerifier(_FailingEngine(base.engine), base.tokenizer, format=RLHFLOW)
    with pytest.raises(BackendError, match="simulated engine failure") as info:
        await verifier.score(*EXAMPLES[1])
    assert isinstance(info.value.__cause__, RuntimeError)


async def test_wrong_engine_for_the_mode_is_rejected(verifiers):
    from ttsearch.backends.vllm.verifier import VLLMVerifier

    generative = verifiers["rlhflow-generative"]
    with pytest.raises(ValueError, match="pooling"):
        VLLMVerifier(generative.engine, generative.tokenizer, format=MATH_SHEPHERD, mode="pooling")
    with pytest.raises(ValueError, match="generative"):
        VLLMVerifier(generative.engine, generative.tokenizer, format=QWEN_PRM, mode="generative")
    # An ALL-pooling classifier engine serves any format with its label tokens (ALL
    # pooling returns every computed position, so no tag is wired into the engine).
    pooling = verifiers["shepherd-pooling"]
    assert VLLMVerifier(pooling.engine, pooling.tokenizer, format=RLHFLOW).reads_prefix_cache
