"""PRM input formats: exact texts and token ids with the real Llama 3 and Qwen2 tokenizers (no engine)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ttsearch.backends.prm_formats import (
    CHATML_CHAT_FORMAT,
    MATH_SHEPHERD,
    QWEN_PRM,
    RLHFLOW,
    PrmEncoder,
    PrmFormat,
    format_segments,
    format_text,
)
from ttsearch.prompts import QWEN_PRM_SYSTEM_PROMPT

QUESTION = "What is 1+1?"
STEPS = ["1+1=2.", "The answer is 2."]

# Llama 3 ids
BOS, START_HEADER, END_HEADER, EOT = 128000, 128006, 128007, 128009
ASSISTANT, DOUBLE_NEWLINE, PLUS, MINUS, TAG = 78191, 271, 10, 12, 116624

# Steps whose ends and starts could merge with their neighbours when tokenized.
TRICKY_STEPS = [
    "Step 1: 12 + 30 = 42 ",  # trailing space
    "  Step 2: leading spaces\nand a newline\n",  # leading spaces, trailing newline
    "Шаг 3: кириллица ки",  # Cyrillic, ends with the tag's word itself
    "$\\boxed{42}$",
    "4",  # a lone digit (Llama 3 splits digits from spaces)
    "end.\t",
]


@pytest.fixture(scope="module")
def qwen2_prm(qwen2):
    qwen2.add_tokens(["<extra_0>"], special_tokens=True)  # as Qwen2.5-Math-PRM's tokenizer
    return qwen2  # this module's copy (tests/engine/conftest.py)


# -- texts ------------------------------------------------------------------------------


def test_math_shepherd_text():
    assert format_text(MATH_SHEPHERD, QUESTION, STEPS) == "What is 1+1? 1+1=2. ки\nThe answer is 2. ки"


def test_rlhflow_text_is_the_llama31_template_of_the_conversation():
    assert format_text(RLHFLOW, QUESTION, STEPS) == (
        "<|begin_of_text|>"
        "<|start_header_id|>system<|end_header_id|>\n\n"
        "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhat is 1+1? 1+1=2.<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n+<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nThe answer is 2.<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n+<|eot_id|>"
    )


def test_rlhflow_trims_turn_contents_like_the_llama_template():
    text = format_text(RLHFLOW, " What is 1+1? ", ["  1+1=2.\n", "The answer is 2.  "])
    # "question + ' ' + step 1" is one message, trimmed as a whole.
    assert "<|end_header_id|>\n\nWhat is 1+1?    1+1=2.<|eot_id|>" in text
    assert "<|end_header_id|>\n\nThe answer is 2.<|eot_id|>" in text


def test_qwen_prm_text():
    assert format_text(QWEN_PRM, QUESTION, STEPS) == (
        f"<|im_start|>system\n{QWEN_PRM_SYSTEM_PROMPT}<|im_end|>\n"
        "<|im_start|>user\nWhat is 1+1?<|im_end|>\n"
        "<|im_start|>assistant\n1+1=2.<extra_0>The answer is 2.<extra_0><|im_end|>\n"
    )


def test_qwen_prm_text_equals_the_qwen2_chat_template(qwen2_prm):
    messages = [
        {"role": "system", "content": QWEN_PRM_SYSTEM_PROMPT},
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": "<extra_0>".join(STEPS) + "<extra_0>"},
    ]
    expected = qwen2_prm.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    assert format_text(QWEN_PRM, QUESTION, STEPS) == expected


@pytest.mark.parametrize("fmt", [MATH_SHEPHERD, RLHFLOW, QWEN_PRM], ids=["shepherd", "rlhflow", "qwen"])
def test_one_anchor_per_step_and_no_empty_trailing_step(fmt):
    # What a solution text "1+1=2.\n\nThe answer is 2.\n\n" splits into: two steps, not three.
    segments = format_segments(fmt, QUESTION, STEPS)
    assert all(seg.endswith(fmt.anchor) for seg in segments[: len(STEPS)])
    text = format_text(fmt, QUESTION, STEPS)
    assert text.count(fmt.anchor) == len(STEPS)
    assert "\n\n" + fmt.anchor not in text and fmt.anchor + fmt.anchor not in text


def test_no_steps_gives_no_anchor():
    for fmt in (MATH_SHEPHERD, RLHFLOW, QWEN_PRM):
        assert fmt.anchor not in format_text(fmt, QUESTION, [])


# -- token ids --------------------------------------------------------------------------


def test_math_shepherd_ids(llama3):
    inp = PrmEncoder(MATH_SHEPHERD, llama3).encode(QUESTION, STEPS)
    # BOS What is 1+1? ' ' 1+1=2. ' ки' '\n' The answer is 2. ' ки'
    assert inp.token_ids == (
        BOS, 3923, 374, 220, 16, 10, 16, 30, 220, 16, 10, 16, 28, 17, 13, TAG,
        198, 791, 4320, 374, 220, 17, 13, TAG,
    )  # fmt: skip
    assert inp.score_positions == (15, 23)


def test_rlhflow_ids_have_one_bos_and_positions_predicting_each_plus(llama3):
    encoder = PrmEncoder(RLHFLOW, llama3)
    assert encoder.anchor_id == DOUBLE_NEWLINE and encoder.label_ids == (PLUS, MINUS)
    inp = encoder.encode(QUESTION, STEPS)
    ids = inp.token_ids
    assert ids[0] == BOS and ids.count(BOS) == 1
    assert inp.score_positions == (48, 65)
    for p in inp.score_positions:
        # ... <|start_header_id|>assistant<|end_header_id|> \n\n [+] <|eot_id|>
        assert ids[p - 3 : p + 3] == (START_HEADER, ASSISTANT, END_HEADER, DOUBLE_NEWLINE, PLUS, EOT)
    assert ids[-3:] == (DOUBLE_NEWLINE, PLUS, EOT)  # search-and-learn's logits[:, -3]


def test_qwen_prm_ids(qwen2_prm):
    encoder = PrmEncoder(QWEN_PRM, qwen2_prm)
    extra_0 = qwen2_prm.convert_tokens_to_ids("<extra_0>")
    assert encoder.anchor_id == extra_0 and encoder.label_ids is None
    inp = encoder.encode(QUESTION, STEPS)
    assert [i for i, t in enumerate(inp.token_ids) if t == extra_0] == list(inp.score_positions)
    assert len(inp.score_positions) == 2
    assert inp.token_ids[:3] == (151644, 8948, 198)  # <|im_start|>system\n: no BOS
    assert inp.token_ids[-3:] == (extra_0, 151645, 198)  # ...<extra_0><|im_end|>\n


@pytest.mark.parametrize("fmt", [MATH_SHEPHERD, RLHFLOW, QWEN_PRM], ids=["shepherd", "rlhflow", "qwen"])
def test_ids_equal_whole_text_tokenization(fmt, llama3, qwen2_prm):
    tokenizer = qwen2_prm if fmt is QWEN_PRM else llama3
    encoder = PrmEncoder(fmt, tokenizer)
    for steps in (STEPS, TRICKY_STEPS, TRICKY_STEPS[::-1], ["x"]):
        inp = encoder.encode(QUESTION, steps)
        whole = tokenizer.encode(format_text(fmt, QUESTION, steps), add_special_tokens=fmt.add_special_tokens)
        assert list(inp.token_ids) == whole, steps
        assert len(inp.score_positions) == len(steps)
        assert all(inp.token_ids[p] == encoder.anchor_id for p in inp.score_positions)


@pytest.mark.parametrize("fmt", [MATH_SHEPHERD, RLHFLOW, QWEN_PRM], ids=["shepherd", "rlhflow", "qwen"])
def test_prefix_of_steps_gives_prefix_of_ids(fmt, llama3, qwen2_prm):
    # What makes the generative scorer's prefix caching work across rounds.
    encoder = PrmEncoder(fmt, qwen2_prm if fmt is QWEN_PRM else llama3)
    full = encoder.encode(QUESTION, TRICKY_STEPS)
    for k in range(1, len(TRICKY_STEPS)):
        part = encoder.encode(QUESTION, TRICKY_STEPS[:k])
        assert part.score_positions == full.score_positions[:k]
        end = part.score_positions[-1] + 1
        assert part.token_ids[:end] == full.token_ids[:end]


# -- requests ---------------------------------------------------------------------------


def test_encode_requests_for_a_process_model(llama3):
    encoder = PrmEncoder(RLHFLOW, llama3)
    full = encoder.encode(QUESTION, TRICKY_STEPS)
    (all_steps,) = encoder.encode_requests(QUESTION, TRICKY_STEPS)
    assert all_steps.score_positions == full.score_positions
    assert all_steps.token_ids == full.token_ids[: full.score_positions[-1] + 1]
    (newest,) = encoder.encode_requests(QUESTION, TRICKY_STEPS, first=4)
    assert newest.score_positions == full.score_positions[4:]
    assert encoder.encode_requests(QUESTION, TRICKY_STEPS, first=len(TRICKY_STEPS)) == []
    for bad in (-1, len(TRICKY_STEPS) + 1):
        with pytest.raises(ValueError, match="first"):
            encoder.encode_requests(QUESTION, TRICKY_STEPS, first=bad)


def test_encode_requests_for_an_outcome_model(llama3):
    orm = MATH_SHEPHERD.as_outcome_model()
    assert orm.outcome_only and not MATH_SHEPHERD.outcome_only
    encoder = PrmEncoder(orm, llama3)
    requests = encoder.encode_requests(QUESTION, STEPS, first=0)
    assert len(requests) == 2
    # Step k is scored as the last (only) step of the solution that ends there.
    texts = ["What is 1+1? 1+1=2. ки", "What is 1+1? 1+1=2.\n\nThe answer is 2. ки"]
    for request, text in zip(requests, texts):
        assert list(request.token_ids) == llama3.encode(text)
        assert request.score_positions == (len(request.token_ids) - 1,)
    assert encoder.encode_requests(QUESTION, STEPS, first=1) == requests[1:]


# -- configuration errors ---------------------------------------------------------------


def test_invalid_formats_are_rejected():
    with pytest.raises(ValueError, match="step_tag"):
        PrmFormat(layout="tagged", head="lm")
    with pytest.raises(ValueError, match="chat"):
        PrmFormat(layout="turns", head="lm")
    with pytest.raises(ValueError, match="head='lm'"):
        PrmFormat(layout="turns", head="classifier", chat=CHATML_CHAT_FORMAT)
    with pytest.raises(ValueError, match="label_tokens"):
        replace(RLHFLOW, label_tokens=("+", "+"))
    with pytest.raises(ValueError, match="layout"):
        PrmFormat(layout="bogus", head="lm", step_tag="x")  # type: ignore[arg-type]


def test_label_tokens_must_be_single_tokens(llama3):
    with pytest.raises(ValueError, match="single token"):
        PrmEncoder(replace(RLHFLOW, label_tokens=("correct step", "-")), llama3)


def test_label_token_strings_for_vllm_classifier_from_token(llama3, qwen2_prm):
    assert PrmEncoder(MATH_SHEPHERD, llama3).label_token_strings == ["+", "-"]
    with pytest.raises(ValueError):
        PrmEncoder(QWEN_PRM, qwen2_prm).label_token_strings  # noqa: B018
