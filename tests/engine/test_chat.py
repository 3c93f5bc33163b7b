"""Chat templating of problems with the real tokenizers: Llama 3 (no chat template, our
built-in format) and Qwen2 (its own template)."""

from __future__ import annotations

import pytest

from ttsearch.backends.chat import (
    LLAMA3_CHAT_FORMAT,
    ChatFormat,
    encode_chat_prompt,
    render_chat_format,
)
from ttsearch.prompts import LLAMA3_MATH_SYSTEM_PROMPT

PROBLEM = "What is $1 + 1$?"


def test_llama3_builtin_format_has_one_bos_and_ends_at_the_assistant_turn(llama3):
    assert not llama3.chat_template
    ids = encode_chat_prompt(llama3, PROBLEM)
    assert ids[0] == 128000 and ids.count(128000) == 1
    # <|start_header_id|>assistant<|end_header_id|>\n\n
    assert ids[-4:] == [128006, 78191, 128007, 271]
    assert llama3.decode(ids) == (
        "<|begin_of_text|>"
        f"<|start_header_id|>system<|end_header_id|>\n\n{LLAMA3_MATH_SYSTEM_PROMPT}<|eot_id|>"
        f"<|start_header_id|>user<|end_header_id|>\n\n{PROBLEM}<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_llama3_without_system_prompt_and_with_stripped_content(llama3):
    ids = encode_chat_prompt(llama3, f"  {PROBLEM}\n\n", system_prompt=None)
    assert llama3.decode(ids) == (
        f"<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n{PROBLEM}<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_bos_inside_the_problem_is_rejected(llama3):
    with pytest.raises(ValueError, match="BOS"):
        encode_chat_prompt(llama3, "x <|begin_of_text|> y")


def test_tokenizer_template_required_when_asked_for(llama3):
    with pytest.raises(ValueError, match="no chat template"):
        encode_chat_prompt(llama3, PROBLEM, chat_format="tokenizer")


def test_qwen2_uses_its_own_template(qwen2):
    ids = encode_chat_prompt(qwen2, PROBLEM, system_prompt="Be brief.")
    text = qwen2.decode(ids)
    assert text == (
        f"<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n{PROBLEM}<|im_end|>\n<|im_start|>assistant\n"
    )
    assert qwen2.bos_token_id not in ids  # Qwen adds no BOS


def test_builtin_llama3_format_refuses_a_foreign_vocabulary(qwen2):
    template = qwen2.chat_template
    qwen2.chat_template = None
    try:
        with pytest.raises(ValueError, match="not one token"):
            encode_chat_prompt(qwen2, PROBLEM)
    finally:
        qwen2.chat_template = template


def test_explicit_format(qwen2):
    chatml = ChatFormat(bos="", turn_start="<|im_start|>{role}\n", turn_end="<|im_end|>\n")
    ids = encode_chat_prompt(qwen2, PROBLEM, system_prompt="Be brief.", chat_format=chatml)
    assert ids == encode_chat_prompt(qwen2, PROBLEM, system_prompt="Be brief.")


def test_chat_format_validation_and_rendering():
    with pytest.raises(ValueError, match="role"):
        ChatFormat(bos="", turn_start="<start>", turn_end="<end>")
    text = render_chat_format(LLAMA3_CHAT_FORMAT, [{"role": "user", "content": "a {content} b"}])
    assert "a {content} b" in text  # content is not a format string


# The date logic and system header of the Llama 3.1 / 3.2 Instruct chat template (tools left
# out): it stamps today's date unless the caller passes `date_string`.
LLAMA32_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if not date_string is defined %}"
    '{%- if strftime_now is defined %}{%- set date_string = strftime_now("%d %b %Y") %}'
    '{%- else %}{%- set date_string = "26 Jul 2024" %}{%- endif %}'
    "{%- endif %}"
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system_message = messages[0]['content']|trim %}{%- set messages = messages[1:] %}"
    '{%- else %}{%- set system_message = "" %}{%- endif %}'
    '{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}'
    '{{- "Cutting Knowledge Date: December 2023\\n" }}'
    '{{- "Today Date: " + date_string + "\\n\\n" }}'
    '{{- system_message }}{{- "<|eot_id|>" }}'
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)


@pytest.fixture
def llama32(llama3):
    llama3.chat_template = LLAMA32_TEMPLATE
    yield llama3
    llama3.chat_template = None


def test_the_template_date_is_pinned_not_today(llama32):
    from ttsearch.backends.chat import DEFAULT_DATE_STRING

    assert DEFAULT_DATE_STRING == "26 Jul 2024"  # the Llama 3 template's own fallback
    text = llama32.decode(encode_chat_prompt(llama32, PROBLEM))
    assert "Today Date: 26 Jul 2024\n\n" in text
    assert text.count("<|begin_of_text|>") == 1 and text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    other = llama32.decode(encode_chat_prompt(llama32, PROBLEM, date_string="01 Jan 2025"))
    assert "Today Date: 01 Jan 2025\n\n" in other


def test_date_string_none_leaves_the_date_to_the_template(llama32):
    import time

    text = llama32.decode(encode_chat_prompt(llama32, PROBLEM, date_string=None))
    assert f"Today Date: {time.strftime('%d %b %Y')}" in text
