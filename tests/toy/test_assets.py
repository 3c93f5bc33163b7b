"""Tests for the shipped toy models in ttsearch/assets/toy/ (transformers only, ~10 s).

They check what the rest of the project relies on: both models load, stop on <|eot_id|>,
use the toy tokenizer, stay small, the policy is neither useless nor perfect, and the PRM
tells good sampled steps from bad ones and picks right solutions among one problem's samples. A failure here means the assets are missing or
stale: rebuild them with `python -m tools.toy_train --out ttsearch/assets/toy --seed 0`.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

from tools.toy_train import greedy_accuracy, label_solutions, prm_scores, roc_auc, sample_solutions
from ttsearch.backends.prm_formats import MATH_SHEPHERD, PrmEncoder
from ttsearch.toy import TOY_ASSETS_DIR, TOY_POLICY_DIR, TOY_PRM_DIR
from ttsearch.toy.task import HELD_OUT_SEED, make_problems
from ttsearch.toy.tokenizer import EOS, build_tokenizer


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


PICK_MARGIN = 0.05  # measured: +8 points on these 40 problems, +19 on the 200 of toy_metrics.json


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


@pytest.fixture(scope="module")
def scored_samples(policy: Any, prm: Any, tokenizer: Any) -> tuple[list[Any], list[list[float]]]:
    """8 solutions the policy samples at T=0.8 for each of 40 held-out problems, with the
    PRM's step scores (the PRM's job in the search)."""
    torch.set_num_threads(2)
    encoder = PrmEncoder(MATH_SHEPHERD, tokenizer)
    assert encoder.label_ids is not None
    problems = make_problems(40, HELD_OUT_SEED)
    texts = sample_solutions(policy, tokenizer, problems, 8, temperature=0.8, seed=0, max_new_tokens=160)
    data = label_solutions(encoder, problems, texts, dedupe=False)
    return data, prm_scores(prm, data, encoder.label_ids, tokenizer.pad_token_id)


def test_prm_separates_good_from_bad_sampled_steps(scored_samples: Any) -> None:
    # Step-level ROC AUC of P("+") against the exact step labels.
    data, scores = scored_samples
    labels = [y for ex in data for y in ex.labels]
    assert 0 < sum(labels) < len(labels)
    assert roc_auc([s for ss in scores for s in ss], labels) > 0.8


def test_prm_picks_right_solutions_among_one_problems_samples(scored_samples: Any) -> None:
    # Not just difficulty: among the samples of one problem, the solution with the best
    # lowest-step score is right far more often than a sample picked at random.
    data, scores = scored_samples
    by_problem: dict[int, list[tuple[float, bool]]] = {}
    for ex, ss in zip(data, scores):
        by_problem.setdefault(ex.source[0], []).append((min(ss), ex.correct))
    picked = sum(max(cands, key=lambda c: c[0])[1] for cands in by_problem.values()) / len(by_problem)
    at_random = sum(ok for cands in by_problem.values() for _, ok in cands) / sum(map(len, by_problem.values()))
    assert picked >= at_random + PICK_MARGIN, (picked, at_random)


def test_metrics_file_matches_the_brief() -> None:
    metrics = json.loads((TOY_ASSETS_DIR / "toy_metrics.json").read_text())
    assert 0.3 <= metrics["greedy_accuracy"] <= 0.7
    assert 0.0 < metrics["sampled_accuracy"] < metrics["greedy_accuracy"] + 0.1
    assert metrics["prm_step_auc"] > 0.8
    assert metrics["test_seed"] == HELD_OUT_SEED
