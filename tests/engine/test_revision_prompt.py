"""The revision prompt (`encode_revision_prompt`): previous attempts as consecutive
assistant turns, on the toy tokenizer (its own template), the real Llama 3 tokenizer (the
built-in format) and Qwen2 (its own template); with no attempts, the policy's prompt."""

from __future__ import annotations

from typing import Any

import pytest

from ttsearch.backends.chat import encode_chat_prompt, encode_revision_prompt
from ttsearch.prompts import LLAMA3_MATH_SYSTEM_PROMPT
from ttsearch.toy.revision import MAX_PREVIOUS_ATTEMPTS, encode_toy_revision_prompt
from ttsearch.toy.tokenizer import TOY_SYSTEM_PROMPT, build_tokenizer

TOY_PROBLEM = "Compute 7 - 5 + 6."
FIRST = "## Step 1: 7 - 5 = 2\n\n## Step 2: 2 + 6 = 9\n\nTherefore, the final answer is: $\\boxed{9}$. I hope it is correct."
SECOND = "## Step 1: 7 - 5 = 3\n\n## Step 2: 3 + 6 = 9\n\nTherefore, the final answer is: $\\boxed{9}$. I hope it is correct."
HEADER = "<|start_header_id|>{}<|end_header_id|>\n\n"


@pytest.fixture(scope="module")
def toy() -> Any:
    return build_tokenizer()


def _turn(role: str, content: str) -> str:
    return HEADER.format(role) + content + "<|eot_id|>"


def test_no_previous_attempt_is_the_policy_prompt_token_for_token(toy: Any, llama3: Any, qwen2: Any) -> None:
    for tok, system in ((toy, TOY_SYSTEM_PROMPT), (llama3, LLAMA3_MATH_SYSTEM_PROMPT), (qwen2, "Be brief.")):
        assert encode_revision_prompt(tok, TOY_PROBLEM, [], system_prompt=system) == encode_chat_prompt(
            tok, TOY_PROBLEM, system_prompt=system
        )
    policy_prompt = encode_chat_prompt(toy, TOY_PROBLEM, system_prompt=TOY_SYSTEM_PROMPT, chat_format="tokenizer")
    assert encode_toy_revision_prompt(toy, TOY_PROBLEM, []) == policy_prompt


def test_toy_attempts_are_finished_assistant_turns(toy: Any) -> None:
    # A trailing "\n\n" (a step separator) is trimmed by the template, as on any turn.
    ids = encode_toy_revision_prompt(toy, TOY_PROBLEM, [FIRST + "\n\n", SECOND])
    assert toy.decode(ids) == (
        "<|begin_of_text|>"
        + _turn("system", TOY_SYSTEM_PROMPT)
        + _turn("user", TOY_PROBLEM)
        + _turn("assistant", FIRST)
        + _turn("assistant", SECOND)
        + HEADER.format("assistant")
    )
    # The attempts' texts tokenize as the policy writes them (the prompt is their tokens).
    second = toy.encode(SECOND, add_special_tokens=False)
    eot = toy.convert_tokens_to_ids("<|eot_id|>")
    assert ids[-len(second) - 5 : -4] == second + [eot]


def test_toy_prompt_keeps_the_last_four_attempts(toy: Any) -> None:
    attempts = [FIRST.replace("{9}", f"{{{i}}}") for i in range(6)]
    ids = encode_toy_revision_prompt(toy, TOY_PROBLEM, attempts)
    assert ids == encode_toy_revision_prompt(toy, TOY_PROBLEM, attempts[-MAX_PREVIOUS_ATTEMPTS:])
    text = toy.decode(ids)
    assert "{0}" not in text and "{1}" not in text and all(f"{{{i}}}" in text for i in range(2, 6))


def test_llama3_builtin_format_with_previous_attempts(llama3: Any) -> None:
    ids = encode_revision_prompt(llama3, TOY_PROBLEM, [FIRST, SECOND], system_prompt="Solve.")
    assert ids.count(128000) == 1 and ids[0] == 128000
    assert ids.count(128009) == 4  # system, user and the two attempts end in <|eot_id|>
    assert ids[-4:] == [128006, 78191, 128007, 271]  # the next assistant turn starts
    assert llama3.decode(ids) == (
        "<|begin_of_text|>"
        + _turn("system", "Solve.")
        + _turn("user", TOY_PROBLEM)
        + _turn("assistant", FIRST)
        + _turn("assistant", SECOND)
        + HEADER.format("assistant")
    )


def test_qwen2_template_with_previous_attempts(qwen2: Any) -> None:
    ids = encode_revision_prompt(qwen2, TOY_PROBLEM, [FIRST], system_prompt="Be brief.")
    assert qwen2.decode(ids) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        f"<|im_start|>user\n{TOY_PROBLEM}<|im_end|>\n"
        f"<|im_start|>assistant\n{FIRST}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_bos_inside_an_attempt_is_rejected(llama3: Any) -> None:
    with pytest.raises(ValueError, match="BOS"):
        encode_revision_prompt(llama3, TOY_PROBLEM, ["x <|begin_of_text|> y"])


def test_an_instruction_turn_follows_each_attempt(llama3: Any, qwen2: Any) -> None:
    ids = encode_revision_prompt(llama3, TOY_PROBLEM, [FIRST, SECOND], system_prompt="Solve.", instruction="Fix it.")
    assert llama3.decode(ids) == (
        "<|begin_of_text|>"
        + _turn("system", "Solve.")
        + _turn("user", TOY_PROBLEM)
        + _turn("assistant", FIRST)
        + _turn("user", "Fix it.")
        + _turn("assistant", SECOND)
        + _turn("user", "Fix it.")
        + HEADER.format("assistant")
    )
    assert qwen2.decode(
        encode_revision_prompt(qwen2, TOY_PROBLEM, [FIRST], system_prompt="B.", instruction="Fix.")
    ) == (
        "<|im_start|>system\nB.<|im_end|>\n"
        f"<|im_start|>user\n{TOY_PROBLEM}<|im_end|>\n"
        f"<|im_start|>assistant\n{FIRST}<|im_end|>\n"
        "<|im_start|>user\nFix.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    # No attempt yet: the plain prompt, instruction or not.
    assert encode_revision_prompt(llama3, TOY_PROBLEM, [], instruction="Fix it.") == encode_chat_prompt(
        llama3, TOY_PROBLEM
    )


def test_an_empty_instruction_is_refused(llama3: Any) -> None:
    with pytest.raises(ValueError, match="instruction is empty"):
        encode_revision_prompt(llama3, TOY_PROBLEM, [FIRST], instruction="  ")
