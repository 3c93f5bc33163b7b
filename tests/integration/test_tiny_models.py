"""The tiny calibrated Llama: "\\n\\n" and <|eot_id|> come out at the requested per-token rates
(checked on the model's own next-token distribution with transformers; no vLLM), and
the build is deterministic."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.integration.conftest import TEST_P_EOS, TEST_P_STEP

STEP_ID, EOT = 271, 128009


def test_rates_match_the_calibration(tiny_llama_dir: Path):
    torch = pytest.importorskip("torch")
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    config = AutoConfig.from_pretrained(tiny_llama_dir)
    assert config.head_dim == 64 and EOT in config.eos_token_id and not config.tie_word_embeddings
    assert AutoTokenizer.from_pretrained(tiny_llama_dir).eos_token_id == EOT

    model = LlamaForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    ids = torch.randint(0, 128000, (4, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        probs = torch.softmax(model(ids).logits / 0.8, dim=-1)  # sampled at T = 0.8
    p_step_token = probs[..., STEP_ID].mean().item()
    p_eos = probs[..., EOT].mean().item()
    # The "\n\n" token carries p_step less the uniform mass of the 587 other tokens with "\n\n".
    assert p_step_token == pytest.approx(TEST_P_STEP - 587 / 128257, rel=0.1)
    assert p_eos == pytest.approx(TEST_P_EOS, rel=0.1)
    rest = probs[..., :128000].clone()
    rest[..., STEP_ID] = 0.0
    assert rest.max().item() < 0.001  # the rest stays near uniform (~1/128257)


def test_build_is_deterministic(tiny_llama_dir: Path, tmp_path: Path, llama3_tokenizer_dir: Path):
    from tools.tiny_models import build_tiny_llama

    again = build_tiny_llama(tmp_path, tokenizer_dir=llama3_tokenizer_dir, p_step=TEST_P_STEP, p_eos=TEST_P_EOS, seed=0)

    def digest(path: Path) -> str:
        return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()

    assert digest(again) == digest(tiny_llama_dir)
