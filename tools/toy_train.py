"""Train the toy policy and the toy PRM on CPU and write them in Hugging Face format.

    python -m tools.toy_train --out ttsearch/assets/toy --seed 0

1. Policy: a tiny `LlamaForCausalLM` trained on gold solutions of `ttsearch.toy.task`
   problems (loss on the solution and its <|eot_id|> only), prompted exactly as the
   search prompts it (`encode_chat_prompt` with the toy tokenizer's chat template and
   `TOY_SYSTEM_PROMPT`). Training stops as soon as greedy accuracy on a validation set
   reaches `target_accuracy`: the point is a policy that is right on easy problems and
   wrong on many hard ones, so that search has something to fix.
2. PRM: the policy samples solutions at T=0.8; every step is labelled by exact checking
   (`check_steps_locally`: "+" iff the step is right given the solution's own previous
   result, so the minimum over steps scores a solution). A copy of the policy is
   fine-tuned with cross-entropy on the ("+", "-") logits at the step tags of
   `ttsearch.backends.prm_formats.MATH_SHEPHERD` inputs (built by its `PrmEncoder`, so
   training and scoring see identical ids), each batch half policy samples and half
   synthetic pairs (a gold solution and a copy with one slip, `corrupt_steps`): the pairs
   differ only in the slip, so only checking the step explains their labels, not the
   problem's difficulty (which is all a PRM trained on samples alone learned).
3. Writes `policy/`, `prm/` and `toy_metrics.json` (greedy and sampled accuracy on
   held-out problems, PRM step-level ROC AUC, best-of-N with the PRM, seeds, times).

Deterministic for a seed and thread count (seeded torch, deterministic algorithms, a
fixed number of threads); the wall-clock times in the metrics are the only exception.
About 29 minutes on 2 CPU cores: policy ~3 min, sampling ~3 min, PRM ~24 min (3000 steps).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ttsearch.backends.chat import encode_chat_prompt
from ttsearch.backends.prm_formats import MATH_SHEPHERD, PrmEncoder
from ttsearch.evaluation.aggregation import select_answer
from ttsearch.evaluation.datasets import Problem
from ttsearch.evaluation.extraction import extract_answer
from ttsearch.prompts import STEP_SEPARATOR
from ttsearch.toy.task import (
    HELD_OUT_SEED,
    check_steps_locally,
    corrupt_steps,
    final_step,
    gold_steps,
    is_correct,
    make_problems,
    split_steps,
)
from ttsearch.toy.tokenizer import TOY_SYSTEM_PROMPT, build_tokenizer

__all__ = [
    "LabelledSolution",
    "ToyTrainConfig",
    "generate",
    "greedy_accuracy",
    "greedy_correct",
    "label_solutions",
    "log",
    "lr_at",
    "main",
    "pad_right",
    "prm_scores",
    "roc_auc",
    "sample_solutions",
    "save_model",
    "synthetic_pairs",
    "train",
]


@dataclass(frozen=True, slots=True)
class ToyTrainConfig:
    """Everything that decides the shipped models (saved into toy_metrics.json)."""

    seed: int = 0
    threads: int = 2  # torch intra-op threads; results depend on it (reduction order)
    # Model shape (policy and PRM). head_dim 64: vLLM's CPU attention supports 64 / 128.
    hidden_size: int = 128
    # 4 layers x 4 heads. The policy's mistakes are mostly taking the wrong operation or
    # number from a long problem; the PRM, trained longer on contrastive pairs, learns to
    # check that lookup (and the one-digit sums) better than the policy makes it.
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 256
    max_position_embeddings: int = 512
    # bf16 autocast for the training passes (2-3x faster on CPUs with AVX512-BF16);
    # weights, optimizer state and all evaluation stay fp32.
    bf16_autocast: bool = True
    # Policy training.
    policy_batch_size: int = 32
    policy_lr: float = 3e-3  # 6e-3 diverged
    warmup_steps: int = 50
    policy_max_steps: int = 3000  # also the length of the cosine learning-rate decay
    eval_every: int = 100
    n_val: int = 100  # validation problems for early stopping (20 per level)
    target_accuracy: float = 0.5  # stop once validation greedy accuracy reaches this
    # Sampling (policy evaluation and PRM data).
    max_new_tokens: int = 160  # a level-5 solution (11 steps) is ~125 tokens
    temperature: float = 0.8
    n_test: int = 200  # held-out problems (seed HELD_OUT_SEED)
    test_samples: int = 8  # samples per held-out problem: sampled accuracy, PRM AUC, best-of-N
    prm_problems: int = 600
    prm_samples: int = 8  # per PRM training problem (duplicates dropped)
    gen_batch_size: int = 128
    # PRM training: a fixed number of batches, each half policy samples (drawn with
    # replacement) and half synthetic gold / one-slip pairs from fresh problems.
    prm_batch_size: int = 64
    prm_lr: float = 1e-3
    prm_train_steps: int = 3000
    prm_synthetic_fraction: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 < self.target_accuracy <= 1.0:
            raise ValueError(f"target_accuracy must be in (0, 1], got {self.target_accuracy}")
        if not 0.0 <= self.prm_synthetic_fraction <= 1.0:
            raise ValueError(f"prm_synthetic_fraction must be in [0, 1], got {self.prm_synthetic_fraction}")


def log(msg: str) -> None:
    print(f"[toy {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------- models


def _new_model(cfg: ToyTrainConfig, tokenizer: Any) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),  # every id the model can emit decodes
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        head_dim=64,  # vLLM's CPU attention supports 64 and 128 only; independent of hidden_size
        max_position_embeddings=cfg.max_position_embeddings,
        rope_theta=10000.0,
        # Untied: vLLM's "+"/"-" classifier for the PRM is built from lm_head rows.
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(cfg.seed)
    return LlamaForCausalLM(config)


def lr_at(step: int, peak: float, warmup: int, total: int) -> float:
    """Linear warm-up, then cosine decay to 10% of `peak` at `total` steps."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.1 + 0.45 * (1.0 + math.cos(math.pi * progress)))


def pad_right(rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([list(r) + [value] * (width - len(r)) for r in rows], dtype=torch.long)


# --------------------------------------------------------------------------- generation


@torch.no_grad()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    *,
    temperature: float | None,
    max_new_tokens: int,
    batch_size: int,
) -> list[list[int]]:
    """Completions (without EOS) of token-id prompts: greedy when `temperature` is None,
    else plain sampling (no top-k / top-p, as vLLM's defaults). Left-padded batches."""
    model.eval()
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    out: list[list[int]] = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        width = max(len(p) for p in chunk)
        ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in chunk], dtype=torch.long)
        mask = (torch.arange(width)[None, :] >= torch.tensor([width - len(p) for p in chunk])[:, None]).long()
        sampling: dict[str, Any] = (
            dict(do_sample=False)
            if temperature is None
            else dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
        )
        gen = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            eos_token_id=eos,
            pad_token_id=pad,
            **sampling,
        )
        for row in gen[:, width:].tolist():
            out.append(row[: row.index(eos)] if eos in row else row)
    return out


def _prompt_ids(tokenizer: Any, problems: Sequence[Problem]) -> list[list[int]]:
    # Exactly what the search sends: the tokenizer's own chat template, toy system prompt.
    return [
        encode_chat_prompt(tokenizer, p.problem, system_prompt=TOY_SYSTEM_PROMPT, chat_format="tokenizer")
        for p in problems
    ]


def greedy_correct(
    model: Any,
    tokenizer: Any,
    problems: Sequence[Problem],
    *,
    max_new_tokens: int = 100,
    batch_size: int = 128,
) -> list[bool]:
    """Per problem: does its greedy solution have the right final answer?"""
    outs = generate(
        model,
        tokenizer,
        _prompt_ids(tokenizer, problems),
        temperature=None,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
    )
    return [is_correct(p, tokenizer.decode(o)) for p, o in zip(problems, outs)]


def greedy_accuracy(
    model: Any,
    tokenizer: Any,
    problems: Sequence[Problem],
    *,
    max_new_tokens: int = 100,
    batch_size: int = 128,
) -> float:
    """Fraction of `problems` whose greedy solution has the right final answer."""
    flags = greedy_correct(model, tokenizer, problems, max_new_tokens=max_new_tokens, batch_size=batch_size)
    return float(np.mean(flags))


def sample_solutions(
    model: Any,
    tokenizer: Any,
    problems: Sequence[Problem],
    k: int,
    *,
    temperature: float,
    seed: int,
    max_new_tokens: int = 100,
    batch_size: int = 128,
) -> list[list[str]]:
    """`k` solutions per problem sampled at `temperature` (texts, EOS stripped); seeds
    torch's global generator with `seed` (HF sampling draws from it)."""
    torch.manual_seed(seed)
    prompts = [ids for ids in _prompt_ids(tokenizer, problems) for _ in range(k)]
    outs = generate(
        model,
        tokenizer,
        prompts,
        temperature=temperature,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
    )
    texts = [tokenizer.decode(o) for o in outs]
    return [texts[i * k : (i + 1) * k] for i in range(len(problems))]


# --------------------------------------------------------------------------- policy


def train_policy(
    cfg: ToyTrainConfig, tokenizer: Any, train_problems: Sequence[Problem], val: Sequence[Problem]
) -> tuple[Any, dict[str, Any]]:
    """Train until validation greedy accuracy reaches the target (or the step limit)."""
    model = _new_model(cfg, tokenizer)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.policy_lr, weight_decay=0.01)
    history: list[tuple[int, float]] = []
    n_steps = 0
    for step in range(cfg.policy_max_steps):
        lo = step * cfg.policy_batch_size
        batch = train_problems[lo : lo + cfg.policy_batch_size]
        inputs, labels = [], []
        for problem, prompt in zip(batch, _prompt_ids(tokenizer, batch)):
            assert problem.solution is not None
            target = tokenizer.encode(problem.solution, add_special_tokens=False) + [eos]
            inputs.append(prompt + target)
            labels.append([-100] * len(prompt) + target)  # no loss on the prompt
        model.train()
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg.policy_lr, cfg.warmup_steps, cfg.policy_max_steps)
        # Right padding under a causal mask cannot affect real positions: no attention mask.
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16_autocast):
            loss = model(input_ids=pad_right(inputs, pad), labels=pad_right(labels, -100)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        n_steps = step + 1
        if n_steps % cfg.eval_every == 0:
            acc = greedy_accuracy(
                model, tokenizer, val, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.gen_batch_size
            )
            history.append((n_steps, acc))
            log(f"policy step {n_steps}: loss {loss.item():.4f}, validation greedy accuracy {acc:.3f}")
            if acc >= cfg.target_accuracy:
                break
        elif n_steps % 10 == 0:
            log(f"policy step {n_steps}: loss {loss.item():.4f}")
    model.eval()
    return model, {"policy_steps": n_steps, "policy_val_history": history}


# --------------------------------------------------------------------------- PRM


@dataclass(frozen=True, slots=True)
class LabelledSolution:
    """One sampled solution as PRM data."""

    token_ids: tuple[int, ...]  # MATH_SHEPHERD input (question, tagged steps), BOS included
    tag_positions: tuple[int, ...]  # one per step
    labels: tuple[bool, ...]  # per step: right given the solution's previous result
    correct: bool  # the final answer is right
    source: tuple[int, int]  # (problem index, sample index) in the inputs it was built from


def label_solutions(
    encoder: PrmEncoder, problems: Sequence[Problem], solutions: Sequence[Sequence[str]], *, dedupe: bool
) -> list[LabelledSolution]:
    """PRM examples from sampled solutions (skips ones without steps)."""
    data = []
    for i, (problem, texts) in enumerate(zip(problems, solutions)):
        seen: set[str] = set()
        for j, text in enumerate(texts):
            if dedupe and text in seen:
                continue  # repeated easy solutions would only weight "+" further
            seen.add(text)
            steps = split_steps(text)
            if not steps:
                continue
            enc = encoder.encode(problem.problem, steps)
            data.append(
                LabelledSolution(
                    token_ids=enc.token_ids,
                    tag_positions=enc.score_positions,
                    labels=tuple(check_steps_locally(problem, steps)),
                    correct=is_correct(problem, text),
                    source=(i, j),
                )
            )
    return data


def _tag_logits(model: Any, batch: Sequence[LabelledSolution], label_ids: tuple[int, int], pad: int) -> torch.Tensor:
    """("+", "-") logits at every tag of the batch, in order: shape [n_tags, 2]."""
    hidden = model.model(input_ids=pad_right([ex.token_ids for ex in batch], pad)).last_hidden_state
    rows = torch.tensor([b for b, ex in enumerate(batch) for _ in ex.tag_positions])
    cols = torch.tensor([p for ex in batch for p in ex.tag_positions])
    return model.lm_head(hidden[rows, cols])[:, list(label_ids)]


def synthetic_pairs(encoder: PrmEncoder, problems: Sequence[Problem], rng: random.Random) -> list[LabelledSolution]:
    """For each problem, its gold solution and a copy with one slip (`corrupt_steps`)."""
    texts = [[STEP_SEPARATOR.join(gold_steps(p)), STEP_SEPARATOR.join(corrupt_steps(p, rng)[0])] for p in problems]
    return label_solutions(encoder, problems, texts, dedupe=False)


def train_prm(
    cfg: ToyTrainConfig,
    policy: Any,
    data: Sequence[LabelledSolution],
    encoder: PrmEncoder,
    synthetic_problems: Sequence[Problem],
) -> Any:
    """A copy of the policy fine-tuned to predict "+" / "-" at the step tags."""
    import copy

    assert encoder.label_ids is not None
    pad = encoder.tokenizer.pad_token_id
    # Starting from the policy (as Math-Shepherd starts from an LM): it already reads the format.
    prm = copy.deepcopy(policy)
    opt = torch.optim.AdamW(prm.parameters(), lr=cfg.prm_lr, weight_decay=0.01)
    rng = random.Random(cfg.seed)
    n_pairs = round(cfg.prm_batch_size * cfg.prm_synthetic_fraction) // 2
    n_sampled = cfg.prm_batch_size - 2 * n_pairs
    next_problem = 0
    for step in range(cfg.prm_train_steps):
        batch = [data[rng.randrange(len(data))] for _ in range(n_sampled)] if data else []
        pair_problems = [synthetic_problems[(next_problem + i) % len(synthetic_problems)] for i in range(n_pairs)]
        next_problem += n_pairs
        batch += synthetic_pairs(encoder, pair_problems, rng)
        prm.train()
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg.prm_lr, cfg.warmup_steps, cfg.prm_train_steps)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16_autocast):
            logits = _tag_logits(prm, batch, encoder.label_ids, pad)
        # Target class 0 is "+" (good), 1 is "-".
        target = torch.tensor([0 if ok else 1 for ex in batch for ok in ex.labels])
        loss = torch.nn.functional.cross_entropy(logits.float(), target)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(prm.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if (step + 1) % 50 == 0:
            log(f"prm step {step + 1}: loss {loss.item():.4f}")
    prm.eval()
    return prm


@torch.no_grad()
def prm_scores(prm: Any, data: Sequence[LabelledSolution], label_ids: tuple[int, int], pad: int) -> list[list[float]]:
    """P("+") at every step tag, per solution."""
    prm.eval()
    scores: list[list[float]] = []
    for lo in range(0, len(data), 64):
        batch = data[lo : lo + 64]
        probs = _tag_logits(prm, batch, label_ids, pad).softmax(-1)[:, 0].tolist()
        for ex in batch:
            scores.append(probs[: len(ex.tag_positions)])
            probs = probs[len(ex.tag_positions) :]
    return scores


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve by the rank-sum (Mann-Whitney) formula; ties get mean ranks.

    :raises ValueError: unless both classes occur.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC AUC needs both positive and negative labels")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average the 1-based ranks over each run of tied scores
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


# --------------------------------------------------------------------------- saving


def save_model(model: Any, tokenizer: Any, out: Path) -> None:
    from transformers import GenerationConfig

    out.mkdir(parents=True, exist_ok=True)
    # Only the token ids: sampling defaults here would silently become vLLM's defaults.
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    # transformers 5 writes its own class name and a separate chat_template.jinja; name the
    # class every version knows and inline the template too, so transformers 4.x (GPU
    # installs of vLLM) loads the same tokenizer.
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config["chat_template"] = tokenizer.chat_template
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------- main


def train(cfg: ToyTrainConfig, out: Path) -> dict[str, Any]:
    """Train both models, save them under `out`, and return the metrics (also saved)."""
    t0 = time.time()
    torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True)
    tokenizer = build_tokenizer()
    pad = tokenizer.pad_token_id

    # Held-out and validation problems; training never sees their texts.
    test = make_problems(cfg.n_test, HELD_OUT_SEED)
    val = make_problems(cfg.n_val, cfg.seed + 3)
    reserved = {p.problem for p in test} | {p.problem for p in val}
    n_train = cfg.policy_max_steps * cfg.policy_batch_size
    drawn = make_problems(2 * n_train, cfg.seed + 1)
    train_problems = [p for p in drawn if p.problem not in reserved][:n_train]
    log(f"{len(train_problems)} training problems, vocab {len(tokenizer)}, {cfg.threads} threads")

    policy, policy_info = train_policy(cfg, tokenizer, train_problems, val)
    t_policy = time.time() - t0
    greedy_flags = greedy_correct(
        policy, tokenizer, test, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.gen_batch_size
    )
    greedy = float(np.mean(greedy_flags))
    per_level = {
        level: float(np.mean([ok for p, ok in zip(test, greedy_flags) if p.level == level]))
        for level in sorted({p.level for p in test if p.level is not None})
    }
    log(
        f"policy: {policy_info['policy_steps']} steps in {t_policy:.0f} s; held-out greedy accuracy "
        f"{greedy:.3f}; per level {per_level}"
    )

    encoder = PrmEncoder(MATH_SHEPHERD, tokenizer)
    assert encoder.label_ids is not None
    sampling: dict[str, Any] = dict(
        temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.gen_batch_size
    )
    prm_problems = [p for p in make_problems(3 * cfg.prm_problems, cfg.seed + 2) if p.problem not in reserved]
    prm_problems = prm_problems[: cfg.prm_problems]
    log(f"sampling {cfg.prm_samples} solutions for each of {len(prm_problems)} PRM problems")
    prm_data = label_solutions(
        encoder,
        prm_problems,
        sample_solutions(policy, tokenizer, prm_problems, cfg.prm_samples, seed=cfg.seed + 4, **sampling),
        dedupe=True,
    )
    n_steps = sum(len(ex.labels) for ex in prm_data)
    n_good = sum(sum(ex.labels) for ex in prm_data)
    log(f"PRM data: {len(prm_data)} solutions, {n_steps} steps, {n_good} labelled '+'")

    test_texts = sample_solutions(policy, tokenizer, test, cfg.test_samples, seed=cfg.seed + 5, **sampling)
    test_data = label_solutions(encoder, test, test_texts, dedupe=False)
    sampled_acc = float(np.mean([is_correct(p, t) for p, ts in zip(test, test_texts) for t in ts]))
    log(f"held-out sampled accuracy at T={cfg.temperature}: {sampled_acc:.3f}")

    t1 = time.time()
    drawn = make_problems(cfg.prm_train_steps * cfg.prm_batch_size // 2, cfg.seed + 6)
    synthetic = [p for p in drawn if p.problem not in reserved]
    prm = train_prm(cfg, policy, prm_data, encoder, synthetic)
    t_prm = time.time() - t1
    scores = prm_scores(prm, test_data, encoder.label_ids, pad)
    step_labels = [y for ex in test_data for y in ex.labels]
    # Undefined when one class is missing (an untrained policy gets every step wrong).
    auc = None
    if 0 < sum(step_labels) < len(step_labels):
        auc = roc_auc([s for ss in scores for s in ss], step_labels)
    log(f"PRM trained in {t_prm:.0f} s; held-out step-level ROC AUC {auc}")

    # Best-of-N on the held-out samples, solution score = the PRM's lowest step score.
    best_of_n = _best_of_n(test, test_texts, test_data, scores)
    log(f"held-out best-of-{cfg.test_samples}: {best_of_n}")

    save_model(policy, tokenizer, out / "policy")
    save_model(prm, tokenizer, out / "prm")
    metrics = {
        "greedy_accuracy": greedy,
        "greedy_accuracy_per_level": per_level,
        "sampled_accuracy": sampled_acc,
        "temperature": cfg.temperature,
        "prm_step_auc": auc,
        **best_of_n,
        "n_test": len(test),
        "test_seed": HELD_OUT_SEED,
        "seeds": {
            "seed": cfg.seed,
            "train_problems": cfg.seed + 1,
            "prm_problems": cfg.seed + 2,
            "validation_problems": cfg.seed + 3,
            "prm_sampling": cfg.seed + 4,
            "test_sampling": cfg.seed + 5,
            "prm_synthetic_problems": cfg.seed + 6,
        },
        "policy_steps": policy_info["policy_steps"],
        "policy_val_history": policy_info["policy_val_history"],
        "prm_examples": len(prm_data),
        "prm_steps": n_steps,
        "prm_positive_fraction": n_good / max(1, n_steps),
        "prm_format": {
            "preset": "MATH_SHEPHERD",
            "step_tag": encoder.format.step_tag,
            "label_tokens": list(encoder.format.label_tokens),
        },
        "system_prompt": TOY_SYSTEM_PROMPT,
        "policy_train_seconds": round(t_policy, 1),
        "prm_train_seconds": round(t_prm, 1),
        "total_seconds": round(time.time() - t0, 1),
        "config": asdict(cfg),
        "torch_version": torch.__version__,
    }
    (out / "toy_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    log(f"wrote {out} in {metrics['total_seconds']:.0f} s")
    return metrics


def _best_of_n(
    problems: Sequence[Problem],
    texts: Sequence[Sequence[str]],
    data: Sequence[LabelledSolution],
    scores: Sequence[Sequence[float]],
) -> dict[str, float]:
    """Selection among the N samples per problem: pass@N (any correct), maj@N (most common
    answer) and best-of-N by the PRM's lowest step score (texts without steps lose)."""
    lowest = {ex.source: min(s) for ex, s in zip(data, scores)}
    passed, majority, picked = [], [], []
    for i, (problem, ts) in enumerate(zip(problems, texts)):
        passed.append(any(is_correct(problem, t) for t in ts))
        vote = select_answer("majority", [extract_answer(t) for t in ts])
        majority.append(vote is not None and is_correct(problem, final_step(vote.answer)))
        best = max(range(len(ts)), key=lambda j: lowest.get((i, j), -math.inf))
        picked.append(is_correct(problem, ts[best]))
    n = len(texts[0]) if texts else 0
    return {
        f"pass_at_{n}": float(np.mean(passed)),
        f"maj_at_{n}": float(np.mean(majority)),
        f"best_of_{n}_prm_min": float(np.mean(picked)),
    }


def main(argv: Sequence[str] | None = None) -> None:
    defaults = ToyTrainConfig()  # slots dataclass: class attributes are not the defaults
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for policy/, prm/, toy_metrics.json")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--target-accuracy", type=float, default=defaults.target_accuracy)
    parser.add_argument("--policy-max-steps", type=int, default=defaults.policy_max_steps)
    args = parser.parse_args(argv)
    cfg = ToyTrainConfig(
        seed=args.seed,
        threads=args.threads,
        target_accuracy=args.target_accuracy,
        policy_max_steps=args.policy_max_steps,
    )
    train(cfg, args.out)


if __name__ == "__main__":
    main()
