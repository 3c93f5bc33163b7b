"""Build real-shaped, random-weight models for the GPU benchmark (no weights to download).

- `policy/`: a Llama-3.2-1B-shaped `LlamaForCausalLM` (hidden 2048, 16 layers, 32 heads,
  8 KV heads, MLP 8192, vocab 128256) whose steps and solutions end like a real model's
  (shared/calibrated-models.md: a constant residual dimension turns `lm_head[:, 0]` into
  a logit bias; "\\n\\n" at p_step per token, <|eot_id|> at p_eos), so a benchmark sees
  ~1/p_step-token steps and ~p_step/p_eos steps per solution.
- `prm/`: a Llama-3.1-8B-shaped one (hidden 4096, 32 layers, 32 heads, 8 KV heads, MLP
  14336) with random weights, scored in the RLHFlow format through "+" / "-": its
  scores are noise, its cost is an 8B PRM's.

Both get the real Llama 3 tokenizer (shared/tokenizers/llama3), saved in bf16. Built on
the GPU when there is one (the 8B in ~1 min, mostly writing 16 GB; `--prm-weights dummy`
writes only its config, for an engine that draws random weights itself).

    python benchmarks/gpu/build_models.py --out /tmp/models [--small]   # --small: CPU-sized smoke test
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("TTSEARCH_SHARED", REPO.parent / "shared"))

SHAPES = {
    "llama-3.2-1b": dict(
        hidden_size=2048,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        intermediate_size=8192,
        head_dim=64,
    ),
    "llama-3.1-8b": dict(
        hidden_size=4096,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        intermediate_size=14336,
        head_dim=128,
    ),
    "small": dict(
        hidden_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=512,
        head_dim=64,
    ),
}


def build(
    out: Path,
    shape: dict,
    tokenizer_dir: Path,
    *,
    policy: bool,
    p_step: float,
    p_eos: float,
    temperature: float,
    seed: int = 0,
    weights: bool = True,
) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from tools.tiny_models import (
        EOS_TEXT,
        EXTRA_EOS_TEXTS,
        RESIDUAL_CONSTANT,
        STEP_TEXT,
        _other_step_tokens,
        logit_bias_weight,
    )

    out.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    eos_id = tokenizer.convert_tokens_to_ids(EOS_TEXT)
    eos_ids = sorted({eos_id, *(tokenizer.convert_tokens_to_ids(t) for t in EXTRA_EOS_TEXTS)} - {None})
    vocab = len(tokenizer)
    config = LlamaConfig(
        vocab_size=vocab,
        rope_theta=500000.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos_ids,
        max_position_embeddings=8192,
        tie_word_embeddings=False,
        **shape,
    )
    if not weights:  # config + tokenizer only: vLLM fills the weights (load_format="dummy")
        config.save_pretrained(str(out))
        tokenizer.eos_token = EOS_TEXT
        tokenizer.save_pretrained(str(out))
        return out
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.bfloat16).eval()
    if policy:
        (step_id,) = tokenizer.encode(STEP_TEXT, add_special_tokens=False)
        p_step_token = p_step - _other_step_tokens(tokenizer, step_id) / vocab
        with torch.no_grad():
            model.model.embed_tokens.weight[:, 0] = RESIDUAL_CONSTANT
            for layer in model.model.layers:
                layer.self_attn.o_proj.weight[0, :] = 0.0
                layer.mlp.down_proj.weight[0, :] = 0.0
            bias = dict(vocab_size=vocab, hidden_size=shape["hidden_size"], temperature=temperature)
            model.lm_head.weight[:, 0] = 0.0
            model.lm_head.weight[step_id, 0] = logit_bias_weight(p_step_token, **bias)
            model.lm_head.weight[eos_id, 0] = logit_bias_weight(p_eos, **bias)
    model.generation_config.eos_token_id = eos_ids
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.eos_token = EOS_TEXT
    tokenizer.save_pretrained(str(out))
    del model
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tokenizer", type=Path, default=SHARED / "tokenizers" / "llama3")
    parser.add_argument("--small", action="store_true", help="tiny shapes (a CPU smoke test)")
    parser.add_argument("--p-step", type=float, default=1 / 60)
    parser.add_argument("--p-eos", type=float, default=1 / 600)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument(
        "--prm-weights",
        choices=["random", "dummy"],
        default="random",
        help="dummy: write the PRM's config and tokenizer only, for an engine started with "
        "load_format='dummy' (vLLM draws the weights: no 16 GB to write and read)",
    )
    args = parser.parse_args()
    for role, shape in (("policy", "llama-3.2-1b"), ("prm", "llama-3.1-8b")):
        started = time.perf_counter()
        dest = args.out / role
        if (dest / "config.json").is_file():
            print(f"{role}: {dest} exists, kept")
            continue
        shutil.rmtree(dest, ignore_errors=True)
        build(
            dest,
            SHAPES["small" if args.small else shape],
            args.tokenizer,
            policy=role == "policy",
            p_step=args.p_step,
            p_eos=args.p_eos,
            temperature=args.temperature,
            weights=role == "policy" or args.prm_weights == "random",
        )
        print(
            f"{role}: {'small' if args.small else shape} at {dest} in {time.perf_counter() - started:.0f} s", flush=True
        )


if __name__ == "__main__":
    main()
