"""Tests for the shipped toy reviser in ttsearch/assets/toy/reviser/ (transformers only, a
few seconds): it loads with the toy tokenizer, has room for 4 previous attempts, writes a
solution when prompted with one, and its metrics file holds the documented keys and the
result it is shipped for. A failure means the assets are missing or stale: rebuild them
with `python -m tools.toy_train_reviser --out ttsearch/assets/toy --seed 0`."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
import torch

from tools.toy_train import generate
from ttsearch.evaluation.extraction import extract_answer
from ttsearch.toy import TOY_ASSETS_DIR, TOY_POLICY_DIR
from ttsearch.toy.revision import TOY_REVISER_DIR, encode_toy_revision_prompt
from ttsearch.toy.task import HELD_OUT_SEED, LEVELS, corrupt_steps, make_problems
from ttsearch.toy.tokenizer import EOS, build_tokenizer

METRICS_PATH = TOY_ASSETS_DIR / "reviser_metrics.json"
CELL_KEYS = {
    "n_problems",
    "policy_pass_at_1",
    "policy_correct_after_wrong",
    "reviser_first_attempt",
    "p_correct_given_previous_wrong",
    "n_previous_wrong",
    "p_wrong_given_previous_right",
    "n_previous_right",
    "chain_accuracy_by_attempt",
    "chain_any_correct",
}


def test_reviser_files_config_and_tokenizer() -> None:
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    for name in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json"):
        assert (TOY_REVISER_DIR / name).is_file(), name
    tok = AutoTokenizer.from_pretrained(TOY_REVISER_DIR)
    assert tok.get_vocab() == build_tokenizer().get_vocab()
    eot = tok.convert_tokens_to_ids(EOS)
    assert tok.eos_token_id == eot and GenerationConfig.from_pretrained(TOY_REVISER_DIR).eos_token_id == eot
    config = AutoConfig.from_pretrained(TOY_REVISER_DIR).to_dict()
    policy = AutoConfig.from_pretrained(TOY_POLICY_DIR).to_dict()
    # The policy's architecture with a longer context: 4 previous attempts of up to 256
    # tokens (the search's limit), the problem and the next attempt.
    assert config["max_position_embeddings"] >= 2048 > policy["max_position_embeddings"]
    assert tok.model_max_length == config["max_position_embeddings"]
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "head_dim", "vocab_size"):
        assert config[key] == policy[key], key
    assert not config["tie_word_embeddings"]


@pytest.fixture(scope="module")
def reviser() -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(TOY_REVISER_DIR).eval()


def test_reviser_writes_a_solution_after_a_wrong_attempt(reviser: Any) -> None:
    torch.set_num_threads(2)
    tok: Any = build_tokenizer()
    problems = make_problems(10, HELD_OUT_SEED)
    rng = random.Random(0)
    wrong = ["\n\n".join(corrupt_steps(p, rng)[0]) for p in problems]
    prompts = [encode_toy_revision_prompt(tok, p.problem, [w]) for p, w in zip(problems, wrong)]
    outs = generate(reviser, tok, prompts, temperature=None, max_new_tokens=160, batch_size=10)
    assert all(extract_answer(tok.decode(out)) is not None for out in outs)


def test_metrics_file_has_the_documented_keys_and_the_result() -> None:
    metrics = json.loads(METRICS_PATH.read_text())
    assert metrics["test_seed"] == HELD_OUT_SEED and metrics["max_previous_attempts"] == 4
    assert set(metrics["per_level"]) == {str(level) for level in LEVELS}
    for cell in [*metrics["per_level"].values(), metrics["all"]]:
        assert set(cell) == CELL_KEYS
        assert len(cell["chain_accuracy_by_attempt"]) == 1 + metrics["config"]["chain_revisions"]
    overall = metrics["all"]
    assert overall["n_problems"] == metrics["n_test"]
    # What the reviser is shipped for: revising a wrong attempt beats the plain policy's
    # pass@1 on the same problems, by more than the noise of resampling the problems.
    assert overall["p_correct_given_previous_wrong"] > overall["policy_pass_at_1"]
    gains = metrics["gain_of_revising_a_wrong_attempt"]
    assert gains["vs_policy_on_same_problems"]["ci95_low"] > 0
