"""Tests for the shipped toy models in ttsearch/assets/toy/ (transformers only, ~10 s).

They check what the rest of the project relies on: both models load, stop on <|eot_id|>,
use the toy tokenizer, stay small, and are neither useless nor perfect, and the PRM ranks
correct solutions above corrupted ones. A failure here means the assets are missing or
stale: rebuild them with `python -m ttsearch.toy.train --out ttsearch/assets/toy --seed 0`.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

from ttsearch.engine.prm_formats import MATH_SHEPHERD, PrmEncoder
from ttsearch.toy import TOY_ASSETS_DIR, TOY_POLICY_DIR, TOY_PRM_DIR
from ttsearch.toy.task import HELD_OUT_SEED, final_step, gold_steps, make_problems
from ttsearch.toy.tokenizer import EOS, build_tokenizer
from ttsearch.toy.train import greedy_accuracy


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TOY_POLICY_DIR)


@pytest.fixture(scope="module")
def policy() -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(TOY_POLICY_DIR).eval()


@pytest.fixture(scope="module")
def prm() -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(TOY_PRM_DIR).eval()


def test_assets_are_small() -> None:
    files = [p for p in TOY_ASSETS_DIR.rglob("*") if p.is_file()]
    names = {p.relative_to(TOY_ASSETS_DIR).as_posix() for p in files}
    for model in ("policy", "prm"):
        for name in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json"):
            assert f"{model}/{name}" in names
    assert "toy_metrics.json" in names
    assert sum(p.stat().st_size for p in files) < 12 * 2**20


@pytest.mark.parametrize("model_dir", [TOY_POLICY_DIR, TOY_PRM_DIR], ids=["policy", "prm"])
def test_models_use_the_toy_tokenizer_and_stop_on_eot(model_dir: Any) -> None:
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    tok = AutoTokenizer.from_pretrained(model_dir)
    assert tok.get_vocab() == build_tokenizer().get_vocab()
    eot = tok.convert_tokens_to_ids(EOS)
    assert tok.eos_token_id == eot
    assert GenerationConfig.from_pretrained(model_dir).eos_token_id == eot
    config = AutoConfig.from_pretrained(model_dir)
    assert config.vocab_size == len(tok)
    assert config.head_dim in (64, 128)  # vLLM's CPU attention
    assert not config.tie_word_embeddings  # vLLM's "+"/"-" classifier reads lm_head rows


def test_policy_is_imperfect_on_held_out_problems(policy: Any, tokenizer: Any) -> None:
    torch.set_num_threads(2)
    problems = make_problems(30, HELD_OUT_SEED)
    accuracy = greedy_accuracy(policy, tokenizer, problems, batch_size=30)
    assert 0.1 <= accuracy <= 0.9


@torch.no_grad()
def test_prm_prefers_gold_solutions_to_corrupted_ones(prm: Any, tokenizer: Any) -> None:
    encoder = PrmEncoder(MATH_SHEPHERD, tokenizer)
    assert encoder.label_ids is not None
    wins = 0
    problems = make_problems(20, HELD_OUT_SEED)
    for problem in problems:
        gold = gold_steps(problem)
        wrong = gold[:-1] + [final_step(int(problem.answer) + 10)]
        last = []
        for steps in (gold, wrong):
            enc = encoder.encode(problem.problem, steps)
            logits = prm(torch.tensor([enc.token_ids])).logits[0, enc.score_positions[-1]]
            last.append(logits[list(encoder.label_ids)].softmax(-1)[0].item())
        wins += last[0] > last[1]
    # A random PRM wins half the time. The shipped one wins 15/20: it does not yet check the
    # final answer reliably (the toy-world issue's open part); raise this as the PRM improves.
    assert wins >= 0.7 * len(problems)


def test_metrics_file_matches_the_brief() -> None:
    metrics = json.loads((TOY_ASSETS_DIR / "toy_metrics.json").read_text())
    assert 0.3 <= metrics["greedy_accuracy"] <= 0.7
    assert 0.0 < metrics["sampled_accuracy"] < metrics["greedy_accuracy"] + 0.1
    assert metrics["prm_step_auc"] > 0.8
    assert metrics["test_seed"] == HELD_OUT_SEED
