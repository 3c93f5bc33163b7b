"""Tiny random-weight Llama policies that end steps and solutions at realistic rates.

A random-weight LM samples "\\n\\n" and EOS with probability ~1/vocab per token, so every
step would run to the length limit. `build_tiny_llama` adds a per-token logit bias
(Llama has no LM-head bias, so it is built from a constant residual dimension; recipe in
shared/calibrated-models.md): residual dimension 0 is a large constant that no layer
touches, so after the final RMSNorm it is ~sqrt(hidden_size) at every position, and
`lm_head.weight[t, 0]` then acts as a bias on token t's logit. Biases are chosen so that,
at the given sampling temperature, "\\n\\n" and EOS come out at the requested per-token
rates (steps of ~1/p_step tokens, ~p_step/p_eos steps per solution).

Used by the integration tests and the CPU benchmarks; no pytest imports here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

__all__ = ["build_tiny_llama", "logit_bias_weight", "tiny_decoder_shape"]

# Llama 3 conventions (also those of the shared llama3 tokenizer).
STEP_TEXT = "\n\n"
EOS_TEXT = "<|eot_id|>"  # end of the assistant turn: what an instruct model ends a solution with
EXTRA_EOS_TEXTS = ("<|end_of_text|>", "<|eom_id|>")  # also stop tokens in Llama 3.x configs
RESIDUAL_CONSTANT = 30.0  # value of residual dimension 0; dominates the final RMSNorm


def logit_bias_weight(p: float, *, vocab_size: int, hidden_size: int, temperature: float) -> float:
    """`lm_head.weight[t, 0]` that makes token t appear with per-token probability ~p when the
    other logits are ~0 and sampling is at `temperature` (no top-k)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"probability must be in (0, 1), got {p}")
    return temperature * math.log(vocab_size * p / (1.0 - p)) / math.sqrt(hidden_size)


def tiny_decoder_shape(
    *,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    head_dim: int,
    max_position_embeddings: int,
    num_kv_heads: int | None = None,
) -> dict[str, Any]:
    """The size settings of a tiny decoder's HF config (`LlamaConfig`, `Qwen2Config`) that
    vLLM's CPU backend runs: `head_dim` 64 or 128 (its attention supports no other), hidden
    size = heads x head_dim, MLP width 2 x hidden, LM head not tied to the embeddings.
    `num_kv_heads`: fewer than `num_heads` for grouped-query attention (default: as many)."""
    if hidden_size != num_heads * head_dim:
        raise ValueError(f"hidden_size ({hidden_size}) must equal num_heads * head_dim ({num_heads} * {head_dim})")
    heads = dict(num_attention_heads=num_heads, num_key_value_heads=num_kv_heads or num_heads)
    return dict(
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        head_dim=head_dim,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=False,
        **heads,
    )


def build_tiny_llama(
    out_dir: str | Path,
    *,
    tokenizer_dir: str | Path,
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 2,
    head_dim: int = 64,
    p_step: float = 1 / 60,
    p_eos: float = 1 / 600,
    temperature: float = 0.8,
    seed: int = 0,
    dtype: str = "bfloat16",
    max_position_embeddings: int = 8192,
) -> Path:
    """Write a random-weight `LlamaForCausalLM` (HF format) to `out_dir` and return the path.

    `p_step`: per-token probability of sampling a token that contains "\\n\\n" (the "\\n\\n"
    token or one of the ~600 others such as ".\\n\\n"), so steps run ~1/p_step tokens;
    `p_eos`: per-token probability of <|eot_id|>; both at sampling `temperature`.
    `head_dim` must be 64 or 128 for vLLM's CPU attention. The tokenizer is copied from
    `tokenizer_dir` with its EOS set to <|eot_id|> (as in Llama 3 instruct models), and
    config / generation_config list <|end_of_text|> and <|eot_id|> (and <|eom_id|> where the
    vocabulary has it) as EOS, so vLLM stops on <|eot_id|>. Deterministic for a given seed;
    takes a few seconds (mostly loading the tokenizer).
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    shape = tiny_decoder_shape(
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
        head_dim=head_dim,
        max_position_embeddings=max_position_embeddings,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    step_ids = tokenizer.encode(STEP_TEXT, add_special_tokens=False)
    eos_id = tokenizer.convert_tokens_to_ids(EOS_TEXT)
    if len(step_ids) != 1 or eos_id is None or eos_id == tokenizer.unk_token_id:
        raise ValueError(f"{tokenizer_dir} is not a Llama 3 tokenizer ('\\n\\n' -> {step_ids})")
    extra_eos = [tokenizer.convert_tokens_to_ids(t) for t in EXTRA_EOS_TEXTS]
    eos_ids = sorted({eos_id, *(i for i in extra_eos if i is not None)})
    vocab_size = len(tokenizer)  # every id the model can sample decodes
    # Llama 3 has ~600 other tokens containing "\n\n" (".\n\n", "\n\n\n", ...), sampled at
    # the near-uniform rate; the "\n\n" token itself makes up the rest of p_step.
    p_step_token = p_step - _other_step_tokens(tokenizer, step_ids[0]) / vocab_size
    if p_step_token <= 0:
        raise ValueError(f"p_step={p_step} is below the rate of tokens containing '\\n\\n'")

    config = LlamaConfig(
        vocab_size=vocab_size,
        rope_theta=500000.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos_ids,
        **shape,
    )
    with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG alone
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).eval()

    with torch.no_grad():
        # Residual dim 0 = constant c at every position, untouched by every layer.
        model.model.embed_tokens.weight[:, 0] = RESIDUAL_CONSTANT
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[0, :] = 0.0
            layer.mlp.down_proj.weight[0, :] = 0.0
        # lm_head column 0 is the bias (h[0] ~ sqrt(hidden_size) after the final norm).
        lm_head = model.lm_head.weight
        lm_head[:, 0] = 0.0
        bias = dict(vocab_size=vocab_size, hidden_size=hidden_size, temperature=temperature)
        lm_head[step_ids[0], 0] = logit_bias_weight(p_step_token, **bias)
        lm_head[eos_id, 0] = logit_bias_weight(p_eos, **bias)

    model.to(getattr(torch, dtype))
    model.generation_config.eos_token_id = eos_ids  # vLLM stops on any of these
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.eos_token = EOS_TEXT
    tokenizer.save_pretrained(str(out))
    return out


def _other_step_tokens(tokenizer, step_id: int) -> int:
    """How many tokens other than `step_id` contain "\\n\\n" (byte-level BPE spells "\\n" Ċ)."""
    marker = tokenizer.convert_ids_to_tokens(step_id)
    return sum(1 for token, i in tokenizer.get_vocab().items() if marker in token and i != step_id)
