"""Tests for the toy tokenizer: vocabulary, round trips, chat template, PRM tokens."""

from __future__ import annotations

import string
from pathlib import Path

import pytest

from ttsearch.backends.chat import encode_chat_prompt
from ttsearch.backends.prm_formats import MATH_SHEPHERD, PrmEncoder
from ttsearch.toy.task import gold_steps, make_problems
from ttsearch.toy.tokenizer import (
    BOS,
    EOS,
    MINUS,
    PLUS,
    STEP_TAG,
    TOY_SYSTEM_PROMPT,
    build_tokenizer,
)


@pytest.fixture(scope="module")
def tok():  # type: ignore[no-untyped-def]
    return build_tokenizer()


def _one_token(tok, text: str) -> int:  # type: ignore[no-untyped-def]
    ids = tok.encode(text, add_special_tokens=False)
    assert len(ids) == 1, (text, ids)
    return ids[0]


def test_vocabulary_is_small_and_deterministic(tok) -> None:  # type: ignore[no-untyped-def]
    assert 100 <= len(tok) <= 160
    assert build_tokenizer().get_vocab() == tok.get_vocab()


def test_step_separator_and_markers_are_single_tokens(tok) -> None:  # type: ignore[no-untyped-def]
    sep = _one_token(tok, "\n\n")
    assert tok.encode("a\n\nb", add_special_tokens=False)[1] == sep
    for marker in (BOS, "<|start_header_id|>", "<|end_header_id|>", EOS, STEP_TAG, PLUS, MINUS):
        _one_token(tok, marker)
    # The PRM label tokens are not the operator tokens the policy writes.
    assert _one_token(tok, PLUS) != _one_token(tok, " + ")
    assert _one_token(tok, MINUS) != _one_token(tok, " - ")


def test_special_token_roles(tok) -> None:  # type: ignore[no-untyped-def]
    assert tok.bos_token == BOS and tok.eos_token == EOS
    assert tok.pad_token_id not in (tok.bos_token_id, tok.eos_token_id)
    ids = tok.encode("1 + 2")
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1


@pytest.mark.parametrize("problem", make_problems(10, seed=5), ids=lambda p: p.unique_id)
def test_solutions_round_trip(tok, problem) -> None:  # type: ignore[no-untyped-def]
    for text in (problem.problem, problem.solution, problem.solution + "\n\n"):
        ids = tok.encode(text, add_special_tokens=False)
        assert tok.decode(ids) == text
    # Phrases are merged: far fewer tokens than characters.
    assert len(tok.encode(problem.solution, add_special_tokens=False)) < len(problem.solution) / 2


def test_any_ascii_round_trips_and_unknown_chars_are_unk(tok) -> None:  # type: ignore[no-untyped-def]
    text = string.printable.replace("\x0b", "").replace("\x0c", "") + " ## Step Therefore"
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
    assert tok.encode("é", add_special_tokens=False) == [tok.unk_token_id]


def test_chat_template_is_llama3_style(tok) -> None:  # type: ignore[no-untyped-def]
    messages = [
        {"role": "system", "content": TOY_SYSTEM_PROMPT},
        {"role": "user", "content": "Compute 1 + 2."},
    ]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nSolve step by step.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nCompute 1 + 2.<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    result = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    ids = list(result["input_ids"] if hasattr(result, "keys") else result)
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id
    assert ids[-1] == _one_token(tok, "\n\n")
    # The project's chat code picks the template up and produces the same ids.
    assert encode_chat_prompt(tok, "Compute 1 + 2.", system_prompt=TOY_SYSTEM_PROMPT) == ids


def test_saved_tokenizer_reloads_identically(tok, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    text = make_problems(1, seed=0)[0].solution
    assert again.encode(text) == tok.encode(text)
    assert again.chat_template == tok.chat_template
    assert again.eos_token == EOS


def test_math_shepherd_preset_fits_the_toy_vocabulary(tok) -> None:  # type: ignore[no-untyped-def]
    problem = make_problems(3, seed=0)[2]
    steps = gold_steps(problem)
    enc = PrmEncoder(MATH_SHEPHERD, tok).encode(problem.problem, steps)
    tag = _one_token(tok, STEP_TAG)
    assert len(enc.score_positions) == len(steps)
    assert all(enc.token_ids[p] == tag for p in enc.score_positions)
    assert enc.token_ids.count(tag) == len(steps)
    assert enc.token_ids[0] == tok.bos_token_id
