"""Tiny random-weight process reward models in Hugging Face format, for tests and benchmarks.

Real PRM weights are 8-16 GB and cannot be downloaded here, so tests build models with the
real tokenizers and the real architectures but 2 layers of width 128 (head_dim 64: vLLM's
CPU attention supports 64 and 128 only). Plain random weights score every step alike
(~0.5, or pinned near 0 or 1), which hides indexing bugs: a score read one position off
looks the same. So the builders rescale the embeddings and the attention / MLP output
projections (a position's output then depends on its own token and on its context) and
calibrate the weights that produce the score (mean ~0, std ~2 nats for the deciding logit
difference), so that scores spread over (0, 1) and differ between neighbouring positions.

- `build_tiny_llama_prm`: a `LlamaForCausalLM` with the Llama 3 tokenizer, the shape of
  RLHFlow/Llama3.1-8B-PRM-Deepseek-Data (an LM whose "+" / "-" next-token logits are the
  score); serves the RLHFlow and Math-Shepherd formats.
- `build_tiny_qwen2_prm`: a `Qwen2ForProcessRewardModel` (a Qwen2 body plus a 2-label token
  classifier `score` = Linear -> ReLU -> Linear, as Qwen2.5-Math-PRM) with the Qwen2
  tokenizer plus the `<extra_0>` step token. Transformers has no such class, so the
  weights are written by hand under the names vLLM's `qwen2_rm.py` loads;
  `load_tiny_qwen2_prm_reference` rebuilds it in plain PyTorch for reference scores.

No pytest imports: shipped in the package so that benchmarks can build the same models.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from tools.tiny_models import tiny_decoder_shape

__all__ = [
    "QWEN_PRM_STEP_TOKEN",
    "build_tiny_llama_prm",
    "build_tiny_qwen2_prm",
    "load_tiny_qwen2_prm_reference",
]

QWEN_PRM_STEP_TOKEN = "<extra_0>"

# Shapes shared by both builders: hidden 128 = 2 heads x head_dim 64, 2 layers.
_HIDDEN = 128


def _shape(num_kv_heads: int | None = None) -> dict[str, Any]:
    return tiny_decoder_shape(
        hidden_size=_HIDDEN,
        num_layers=2,
        num_heads=2,
        head_dim=64,
        max_position_embeddings=4096,
        num_kv_heads=num_kv_heads,
    )


# Weight scales that make a position's score depend on both its own token and its context.
# With HF's default init (std 0.02 everywhere) the attention / MLP outputs are tiny, and
# every step tag (the same token) would score alike; with only larger projections, the
# context swamps the token and neighbouring positions score alike. These balance the two.
_EMBED_STD = 0.1
_MIXING_STD = 0.05


# Std (over positions) of the logit difference that decides a score, in nats: ~2 puts
# most scores in (0.1, 0.9).
_SCORE_SPREAD = 2.0


def _calibration_ids(vocab_size: int, generator: torch.Generator) -> torch.Tensor:
    """Random token sequences whose hidden states stand in for real inputs' (calibration)."""
    return torch.randint(0, vocab_size, (8, 96), generator=generator)


def _calibrated_direction(features: torch.Tensor, generator: torch.Generator, spread: float) -> torch.Tensor:
    """A random direction w with (features @ w) of mean ~0 and std `spread`: the mean
    feature vector (a large component shared by all positions, which would push every
    score to 0 or 1) is projected out."""
    mean = features.mean(dim=0)
    w = torch.randn(features.shape[1], generator=generator)
    w = w - (w @ mean) / (mean @ mean) * mean
    projected = features @ w
    return w * (spread / projected.std().clamp_min(1e-6))


def _rescale(embed: torch.nn.Embedding, layers: torch.nn.ModuleList, generator: torch.Generator) -> None:
    embed.weight.data.copy_(torch.randn(embed.weight.shape, generator=generator) * _EMBED_STD)
    for layer in layers:
        for proj in (layer.self_attn.v_proj, layer.self_attn.o_proj, layer.mlp.down_proj):
            w = proj.weight
            w.data.copy_(torch.randn(w.shape, generator=generator) * _MIXING_STD)


def build_tiny_llama_prm(
    out_dir: str | os.PathLike[str],
    *,
    tokenizer_dir: str | os.PathLike[str],
    seed: int = 0,
    label_tokens: tuple[str, str] = ("+", "-"),
    score_spread: float = _SCORE_SPREAD,
) -> Path:
    """Write a 2-layer random `LlamaForCausalLM` (fp32 safetensors) plus the tokenizer to `out_dir`.

    `tokenizer_dir` holds the Llama 3 tokenizer (`tokenizer.json`, `tokenizer_config.json`);
    its files are copied. The LM-head rows of `label_tokens` (good, bad) are set to +/- w/2
    for a direction w calibrated so that logit(good) - logit(bad) has mean ~0 and std
    ~`score_spread` over positions: P(good) / (P(good) + P(bad)) then spreads over (0, 1).
    Returns `out_dir`.
    """
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok_src = Path(tokenizer_dir)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tok_src / name).is_file():
            shutil.copyfile(tok_src / name, out / name)
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(out / "tokenizer.json"))
    label_ids = [_single_token_id(tokenizer, t) for t in label_tokens]

    config = LlamaConfig(
        vocab_size=128256,  # Llama 3; the tokenizer's 128257th token is unused padding
        **_shape(num_kv_heads=1),  # grouped-query attention, as in the real 8B
        rope_theta=500000.0,
        bos_token_id=128000,
        eos_token_id=[128001, 128009],
        torch_dtype="float32",
    )
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    with torch.no_grad():
        _rescale(model.model.embed_tokens, model.model.layers, generator)
        hidden = model.model(input_ids=_calibration_ids(config.vocab_size, generator)).last_hidden_state
        w = _calibrated_direction(hidden.reshape(-1, _HIDDEN), generator, score_spread)
        good, bad = label_ids
        model.lm_head.weight[good] = w / 2
        model.lm_head.weight[bad] = -w / 2
    model.save_pretrained(out, safe_serialization=True)
    return out


def build_tiny_qwen2_prm(
    out_dir: str | os.PathLike[str],
    *,
    tokenizer_dir: str | os.PathLike[str],
    seed: int = 0,
    score_spread: float = _SCORE_SPREAD,
) -> Path:
    """Write a 2-layer random `Qwen2ForProcessRewardModel` (fp32) plus tokenizer to `out_dir`.

    `tokenizer_dir` holds the Qwen2 tokenizer; `<extra_0>` is added to it as a special token
    (Qwen2.5-Math-PRM's step separator). Parameter names are those of the real checkpoint:
    `model.*` (a `Qwen2Model`) and `score.0.*` / `score.2.*` (Linear(h, h) -> ReLU ->
    Linear(h, 2), both with bias). The last layer is calibrated like the Llama builder's
    label rows, so that P(label 1) spreads over (0, 1). Returns `out_dir`.
    """
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, Qwen2Config, Qwen2Model

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    tokenizer.add_tokens([QWEN_PRM_STEP_TOKEN], special_tokens=True)
    tokenizer.save_pretrained(out)

    config = Qwen2Config(
        vocab_size=152064,  # Qwen2.5-7B's; covers the tokenizer plus <extra_0>
        **_shape(),
        rope_theta=10000.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        num_labels=2,
        architectures=["Qwen2ForProcessRewardModel"],
        torch_dtype="float32",
    )
    if len(tokenizer) > config.vocab_size:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens > vocab_size {config.vocab_size}")
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    body = Qwen2Model(config).to(torch.float32).eval()
    with torch.no_grad():
        _rescale(body.embed_tokens, body.layers, generator)
        std = _HIDDEN**-0.5
        w1 = torch.randn(_HIDDEN, _HIDDEN, generator=generator) * std
        b1 = torch.randn(_HIDDEN, generator=generator) * std
        hidden = body(input_ids=_calibration_ids(config.vocab_size, generator)).last_hidden_state
        features = torch.relu(hidden.reshape(-1, _HIDDEN) @ w1.T + b1)
        w = _calibrated_direction(features, generator, score_spread)
    tensors = {f"model.{k}": v.contiguous() for k, v in body.state_dict().items()}
    tensors["score.0.weight"] = w1
    tensors["score.0.bias"] = b1
    tensors["score.2.weight"] = torch.stack([-w / 2, w / 2])  # label 1 = "correct"
    tensors["score.2.bias"] = torch.zeros(2)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(out)
    return out


def load_tiny_qwen2_prm_reference(
    model_dir: str | os.PathLike[str],
) -> Callable[[list[int]], torch.Tensor]:
    """A plain transformers/PyTorch (fp32, CPU) forward of a `build_tiny_qwen2_prm` model.

    Returns `f(token_ids) -> probs` with `probs[i] = softmax(score(h_i))`, shape [len, 2],
    where `h_i` is the final hidden state of `Qwen2Model` at position i.
    """
    from safetensors.torch import load_file
    from transformers import Qwen2Config, Qwen2Model

    path = Path(model_dir)
    config = Qwen2Config.from_pretrained(str(path))
    tensors = load_file(str(path / "model.safetensors"))
    body = Qwen2Model(config).to(torch.float32).eval()
    body.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
    head = torch.nn.Sequential(torch.nn.Linear(_HIDDEN, _HIDDEN), torch.nn.ReLU(), torch.nn.Linear(_HIDDEN, 2))
    head.load_state_dict({k[len("score.") :]: v for k, v in tensors.items() if k.startswith("score.")})
    head = head.to(torch.float32).eval()

    @torch.no_grad()
    def forward(token_ids: list[int]) -> torch.Tensor:
        ids = torch.tensor([token_ids], dtype=torch.long)
        hidden = body(input_ids=ids).last_hidden_state[0]
        return head(hidden).softmax(dim=-1)

    return forward


def _single_token_id(tokenizer: Any, text: str) -> int:
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"{text!r} is not a single token: {ids}")
    return ids[0]
