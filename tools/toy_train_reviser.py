"""Train the toy revision model on CPU from the shipped toy policy, and measure it.

    python -m tools.toy_train_reviser --out ttsearch/assets/toy --seed 0

The recipe of sequential revisions (arXiv 2408.03314, section 6) on the toy world:

1. Data: the shipped toy policy samples `samples_per_problem` solutions at T=1.0 (as the
   searches sample) for `problems_per_level` fresh training problems of each level; the
   toy task's checker (`is_correct`) grades them. Per problem, the wrong samples closest in
   character edit distance to the correct solution are kept, up to 4, the closest last
   (`ttsearch.toy.revision.make_trajectory`).
2. The target is the problem's gold solution, not a correct sample: a sample whose steps
   are all right is the gold text byte for byte in this world (the policy was trained on
   gold solutions), while about a quarter of the samples with the right final answer got
   there through wrong steps that cancel out (0-9 answers are easy to hit by luck; 6 of 35
   in a 20-problem probe), and the gold solution also covers the hard problems the policy
   never solved, which are those where a revision matters most.
3. Each training sequence has k previous attempts, k uniform in 0..4 and capped at what
   the problem has (the paper draws 0 to 4 as well). k = 0 is plain policy data: a chain's
   first attempt has no context, so the reviser must stay a first-attempt policy too; this
   is also all that problems the policy always solves (most of level 1) contribute.
4. A copy of the policy, its `max_position_embeddings` raised from 512 to 2048 (training
   sequences reach ~870 tokens: the problem, 4 previous attempts of up to 160 tokens and
   the target; at the search's 256-token solution limit a prompt with 4 attempts and its
   new attempt need ~1350), is fine-tuned with the loss on the final assistant turn and
   its <|eot_id|> only.
5. Measured on held-out problems (seed `HELD_OUT_SEED`), per level, with transformers
   sampling at T=1.0: the policy's pass@1; the reviser, given one previous attempt sampled
   from the policy, P(correct | previous wrong) and P(wrong | previous right); controls
   that tell revising from merely being a better policy (the reviser's own first-attempt
   accuracy, and the policy's accuracy on a fresh sample of a problem it just got wrong);
   and chains of `chain_revisions` revisions from a policy attempt (accuracy per attempt).
   Written to `reviser/` and `reviser_metrics.json`.

Deterministic for a seed and thread count, as `tools/toy_train.py` (seeded torch,
deterministic algorithms, a fixed number of threads; one by default, so that the build is
the same on any machine); the wall-clock times in the metrics are the only exception.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tools.toy_train import generate, log, lr_at, pad_right, save_model
from ttsearch.evaluation.datasets import Problem
from ttsearch.toy import TOY_POLICY_DIR
from ttsearch.toy.revision import (
    IGNORE_INDEX,
    MAX_PREVIOUS_ATTEMPTS,
    RevisionTrajectory,
    encode_toy_revision_prompt,
    encode_trajectory,
    make_trajectory,
)
from ttsearch.toy.task import HELD_OUT_SEED, LEVELS, gold_solution, is_correct, make_problems
from ttsearch.toy.tokenizer import TOY_SYSTEM_PROMPT, build_tokenizer

__all__ = [
    "HeldOutAttempts",
    "ReviserTrainConfig",
    "build_pool",
    "draw_batches",
    "main",
    "measure",
    "revision_metrics",
    "sample_texts",
    "train",
    "train_reviser",
]


@dataclass(frozen=True, slots=True)
class ReviserTrainConfig:
    """Everything that decides the shipped reviser (saved into reviser_metrics.json)."""

    seed: int = 0
    threads: int = 1  # torch intra-op threads; results depend on it (reduction order)
    # Room for the problem, 4 previous attempts and the new one at the search's 256-token
    # solution limit (~1350 tokens); measured here at 160 tokens a solution (<= ~870).
    max_position_embeddings: int = 2048
    bf16_autocast: bool = True  # training passes only, as tools/toy_train.py
    # Data: the policy's own attempts at fresh training problems.
    problems_per_level: int = 200
    samples_per_problem: int = 8
    temperature: float = 1.0  # the searches sample at T=1.0 on the toy world
    max_new_tokens: int = 160  # a level-5 solution is ~125 tokens
    gen_batch_size: int = 128
    # Fine-tuning.
    batch_size: int = 32
    lr: float = 3e-3  # 1e-3 learned too slowly (see docs/toy-world.md); 5e-3 trained worse
    warmup_steps: int = 50
    train_steps: int = 2000
    length_groups: int = 8  # batches drawn together and cut by length (less padding)
    # Measurement on held-out problems.
    n_test: int = 200
    test_samples: int = 4  # policy attempts per problem, each revised once
    first_attempt_samples: int = 2  # the reviser's attempts per problem without context
    chain_revisions: int = 4

    def __post_init__(self) -> None:
        if self.test_samples < 2:
            raise ValueError("test_samples must be >= 2 (the resampling control pairs two samples)")
        longest = (MAX_PREVIOUS_ATTEMPTS + 1) * (self.max_new_tokens + 8) + 64  # + headers, problem
        if self.max_position_embeddings < longest:
            raise ValueError(f"max_position_embeddings must cover 4 previous attempts and a new one (>= {longest})")


SEED_OFFSETS = {
    "train_problems": 10,
    "train_sampling": 11,
    "trajectories": 12,
    "test_sampling": 13,
    "revisions": 14,
    "first_attempts": 15,
    "chains": 16,  # + the revision round
}


# --------------------------------------------------------------------------- sampling


def sample_texts(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    *,
    seed: int,
    temperature: float,
    max_new_tokens: int,
    batch_size: int,
) -> list[str]:
    """One sampled completion per prompt, in the prompts' order: its text without special
    tokens, as vLLM returns it by default (a stray <|begin_of_text|> in a sample, 1 in
    8000, would otherwise make a second BOS in the next revision prompt).

    Generated shortest prompt first: a batch runs until its longest solution ends, and
    prompt length follows difficulty (level-5 problems are long, and so are their
    solutions), so sorting cuts the padding of mixed batches."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    torch.manual_seed(seed)
    outs = generate(
        model,
        tokenizer,
        [prompts[i] for i in order],
        temperature=temperature,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
    )
    texts = [""] * len(prompts)
    for i, out in zip(order, outs):
        texts[i] = tokenizer.decode(out, skip_special_tokens=True)
    return texts


def _sample_attempts(
    cfg: ReviserTrainConfig,
    model: Any,
    tokenizer: Any,
    problems: Sequence[Problem],
    previous: Sequence[Sequence[str]],
    *,
    seed: int,
) -> list[str]:
    """One attempt per problem, prompted with its `previous` attempts (the last 4 kept)."""
    prompts = [encode_toy_revision_prompt(tokenizer, p.problem, prev) for p, prev in zip(problems, previous)]
    return sample_texts(
        model,
        tokenizer,
        prompts,
        seed=seed,
        temperature=cfg.temperature,
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.gen_batch_size,
    )


def _sample_fresh(
    cfg: ReviserTrainConfig, model: Any, tokenizer: Any, problems: Sequence[Problem], k: int, *, seed: int
) -> list[list[str]]:
    """`k` first attempts (no context) per problem."""
    texts = _sample_attempts(
        cfg, model, tokenizer, [p for p in problems for _ in range(k)], [[]] * (k * len(problems)), seed=seed
    )
    return [texts[i * k : (i + 1) * k] for i in range(len(problems))]


# --------------------------------------------------------------------------- data


def build_pool(problems: Sequence[Problem], attempts: Sequence[Sequence[str]]) -> list[RevisionTrajectory]:
    """Per problem, the trajectory with its (up to) 4 closest wrong attempts before the gold
    solution; training draws how many of them to keep (`draw_batches`)."""
    pool = []
    for problem, texts in zip(problems, attempts):
        wrong = [t for t in texts if not is_correct(problem, t)]
        pool.append(make_trajectory(problem.problem, wrong, gold_solution(problem), MAX_PREVIOUS_ATTEMPTS))
    return pool


def draw_batches(
    pool: Sequence[RevisionTrajectory], tokenizer: Any, rng: random.Random, *, batch_size: int, groups: int
) -> Iterator[list[tuple[list[int], list[int]]]]:
    """Endless training batches of encoded trajectories (input ids, labels).

    Each example is a pool trajectory (drawn with replacement) keeping k of its previous
    attempts, k uniform in 0..4 (capped at what it has). `groups` batches are drawn
    together, sorted by length and cut into batches, in random order: similar lengths pad
    little, and the sequences range from ~60 tokens (k = 0) to ~800."""
    while True:
        examples = [
            encode_trajectory(
                tokenizer, pool[rng.randrange(len(pool))].keep_last(rng.randint(0, MAX_PREVIOUS_ATTEMPTS))
            )
            for _ in range(batch_size * groups)
        ]
        examples.sort(key=lambda ex: len(ex[0]))
        batches = [examples[i : i + batch_size] for i in range(0, len(examples), batch_size)]
        rng.shuffle(batches)
        yield from batches


# --------------------------------------------------------------------------- training


def load_policy(path: Path, max_position_embeddings: int) -> Any:
    """The toy policy, its context raised (RoPE needs no new weights for longer inputs)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, max_position_embeddings=max_position_embeddings)


def train_reviser(
    cfg: ReviserTrainConfig, model: Any, tokenizer: Any, pool: Sequence[RevisionTrajectory]
) -> tuple[Any, list[tuple[int, float]]]:
    """Fine-tune `model` in place on the pool's trajectories; returns it and its loss curve."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    rng = random.Random(cfg.seed + SEED_OFFSETS["trajectories"])
    batches = draw_batches(pool, tokenizer, rng, batch_size=cfg.batch_size, groups=cfg.length_groups)
    pad = tokenizer.pad_token_id
    losses: list[tuple[int, float]] = []
    for step in range(cfg.train_steps):
        batch = next(batches)
        model.train()
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg.lr, cfg.warmup_steps, cfg.train_steps)
        # Right padding under a causal mask cannot affect real positions: no attention mask.
        inputs = pad_right([ids for ids, _ in batch], pad)
        labels = pad_right([lab for _, lab in batch], IGNORE_INDEX)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16_autocast):
            loss = model(input_ids=inputs, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if (step + 1) % 25 == 0:
            losses.append((step + 1, round(loss.item(), 4)))
            log(f"reviser step {step + 1}: loss {loss.item():.4f}, {inputs.shape[1]} tokens wide")
    model.eval()
    return model, losses


# --------------------------------------------------------------------------- measurement


@dataclass(frozen=True, slots=True)
class HeldOutAttempts:
    """Correctness of every attempt measured on the held-out problems (rows: problems)."""

    levels: np.ndarray  # [n] difficulty level per problem
    policy: np.ndarray  # [n, s] the policy's attempts (no context)
    revised: np.ndarray  # [n, s] the reviser's attempt given policy attempt j alone
    reviser_first: np.ndarray  # [n, f] the reviser's attempts without context
    chain: np.ndarray  # [n, 1 + r] policy attempt 0, then r chained revisions


def measure(
    cfg: ReviserTrainConfig, policy: Any, reviser: Any, tokenizer: Any, test: Sequence[Problem]
) -> HeldOutAttempts:
    """Sample every attempt the metrics need and grade it."""
    s = cfg.test_samples
    seeds = {name: cfg.seed + offset for name, offset in SEED_OFFSETS.items()}
    policy_texts = _sample_fresh(cfg, policy, tokenizer, test, s, seed=seeds["test_sampling"])
    log("held-out policy attempts sampled")
    flat_problems = [p for p in test for _ in range(s)]
    revised = _sample_attempts(
        cfg, reviser, tokenizer, flat_problems, [[t] for ts in policy_texts for t in ts], seed=seeds["revisions"]
    )
    log("held-out revisions sampled")
    first = _sample_fresh(cfg, reviser, tokenizer, test, cfg.first_attempt_samples, seed=seeds["first_attempts"])
    chains = [[ts[0]] for ts in policy_texts]
    for r in range(cfg.chain_revisions):
        new = _sample_attempts(cfg, reviser, tokenizer, test, chains, seed=seeds["chains"] + r)
        chains = [chain + [text] for chain, text in zip(chains, new)]
        log(f"held-out chains: revision {r + 1} sampled")

    def grade(rows: Sequence[Sequence[str]]) -> np.ndarray:
        return np.array([[is_correct(p, t) for t in ts] for p, ts in zip(test, rows)], dtype=bool)

    return HeldOutAttempts(
        levels=np.array([p.level for p in test]),
        policy=grade(policy_texts),
        revised=grade([revised[i * s : (i + 1) * s] for i in range(len(test))]),
        reviser_first=grade(first),
        chain=grade(chains),
    )


def _ratio(hits: np.ndarray, counts: np.ndarray) -> float | None:
    total = int(counts.sum())
    return None if total == 0 else float(hits.sum() / total)


def _cell(a: HeldOutAttempts, rows: np.ndarray) -> dict[str, Any]:
    """The metrics over the problems `rows` (a boolean mask)."""
    policy, revised = a.policy[rows], a.revised[rows]
    wrong = ~policy
    s = policy.shape[1]
    # A fresh policy sample after a wrong one: over ordered pairs (j wrong, j' != j) of a problem.
    resample_hits = wrong.sum(1) * policy.sum(1)
    resample_counts = wrong.sum(1) * (s - 1)
    return {
        "n_problems": int(rows.sum()),
        "policy_pass_at_1": float(policy.mean()),
        "policy_correct_after_wrong": _ratio(resample_hits, resample_counts),
        "reviser_first_attempt": float(a.reviser_first[rows].mean()),
        "p_correct_given_previous_wrong": _ratio((revised & wrong).sum(1), wrong.sum(1)),
        "n_previous_wrong": int(wrong.sum()),
        "p_wrong_given_previous_right": _ratio((~revised & policy).sum(1), policy.sum(1)),
        "n_previous_right": int(policy.sum()),
        "chain_accuracy_by_attempt": [float(x) for x in a.chain[rows].mean(0)],
        "chain_any_correct": float(a.chain[rows].any(1).mean()),
    }


def _bootstrap_gains(a: HeldOutAttempts, rng: np.random.Generator, n_boot: int = 2000) -> dict[str, Any]:
    """P(correct | previous wrong) minus two baselines, with 95% intervals from resampling
    problems (the attempts of one problem are not independent):

    - `vs_policy_pass_at_1`: the policy's pass@1 over all the problems;
    - `vs_policy_on_same_problems`: the policy's pass@1 on the same problems, weighted as
      the revisions are (by their number of wrong previous attempts), estimated from the
      other samples of each problem: what sampling the policy afresh instead of revising
      gets (`policy_correct_after_wrong`). Wrong previous attempts come mostly from hard
      problems, so this is the fair baseline, and the lower one.
    """
    wrong = ~a.policy
    hits, counts = (a.revised & wrong).sum(1), wrong.sum(1)
    resample_hits = wrong.sum(1) * a.policy.sum(1)
    resample_counts = wrong.sum(1) * (a.policy.shape[1] - 1)
    passed = a.policy.mean(1)

    def revised(idx: np.ndarray) -> float:
        return float(hits[idx].sum() / max(1, counts[idx].sum()))

    baselines = {
        "vs_policy_pass_at_1": lambda idx: float(passed[idx].mean()),
        "vs_policy_on_same_problems": lambda idx: float(resample_hits[idx].sum() / max(1, resample_counts[idx].sum())),
    }
    n = len(passed)
    draws = [rng.integers(0, n, n) for _ in range(n_boot)]
    gains = {}
    for name, baseline in baselines.items():
        boot = np.array([revised(idx) - baseline(idx) for idx in draws])
        gains[name] = {
            "gain": revised(np.arange(n)) - baseline(np.arange(n)),
            "ci95_low": float(np.quantile(boot, 0.025)),
            "ci95_high": float(np.quantile(boot, 0.975)),
        }
    return gains


def revision_metrics(a: HeldOutAttempts, seed: int) -> dict[str, Any]:
    """Per level and over all problems (see `_cell`), and the overall gains (`_bootstrap_gains`)."""
    per_level = {str(level): _cell(a, a.levels == level) for level in sorted(LEVELS)}
    return {
        "per_level": per_level,
        "all": _cell(a, np.ones(len(a.levels), dtype=bool)),
        "gain_of_revising_a_wrong_attempt": _bootstrap_gains(a, np.random.default_rng(seed)),
    }


# --------------------------------------------------------------------------- main


def _training_problems(cfg: ReviserTrainConfig, reserved: set[str]) -> list[Problem]:
    """`problems_per_level` fresh problems of each level, none of them held out."""
    seed = cfg.seed + SEED_OFFSETS["train_problems"]
    problems: list[Problem] = []
    for level in sorted(LEVELS):
        drawn = make_problems(2 * cfg.problems_per_level, seed, difficulty=level)
        problems += [p for p in drawn if p.problem not in reserved][: cfg.problems_per_level]
    return problems


def train(cfg: ReviserTrainConfig, out: Path, policy_dir: Path = TOY_POLICY_DIR) -> dict[str, Any]:
    """Sample the data, train the reviser, measure it, save `reviser/` and the metrics."""
    t0 = time.time()
    torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True)
    tokenizer = build_tokenizer()
    tokenizer.model_max_length = cfg.max_position_embeddings
    policy = load_policy(policy_dir, cfg.max_position_embeddings).eval()

    test = make_problems(cfg.n_test, HELD_OUT_SEED)
    problems = _training_problems(cfg, {p.problem for p in test})
    log(f"sampling {cfg.samples_per_problem} attempts at each of {len(problems)} training problems")
    attempts = _sample_fresh(
        cfg, policy, tokenizer, problems, cfg.samples_per_problem, seed=cfg.seed + SEED_OFFSETS["train_sampling"]
    )
    pool = build_pool(problems, attempts)
    t_sampling = time.time() - t0
    n_previous = [len(t.previous) for t in pool]
    log(f"pool: {len(pool)} trajectories, previous attempts {np.bincount(n_previous).tolist()} in {t_sampling:.0f} s")

    t1 = time.time()
    reviser, losses = train_reviser(cfg, load_policy(policy_dir, cfg.max_position_embeddings), tokenizer, pool)
    t_train = time.time() - t1
    log(f"reviser trained in {t_train:.0f} s")

    t2 = time.time()
    attempts_measured = measure(cfg, policy, reviser, tokenizer, test)
    metrics = revision_metrics(attempts_measured, cfg.seed)
    t_measure = time.time() - t2
    log(f"measured in {t_measure:.0f} s: {json.dumps(metrics['all'])}")

    save_model(reviser, tokenizer, out / "reviser")
    full = {
        **metrics,
        "n_test": len(test),
        "test_seed": HELD_OUT_SEED,
        "temperature": cfg.temperature,
        "max_previous_attempts": MAX_PREVIOUS_ATTEMPTS,
        "system_prompt": TOY_SYSTEM_PROMPT,
        "pool_previous_attempts_histogram": np.bincount(n_previous, minlength=MAX_PREVIOUS_ATTEMPTS + 1).tolist(),
        "train_loss": losses,
        "seeds": {"seed": cfg.seed, **{name: cfg.seed + offset for name, offset in SEED_OFFSETS.items()}},
        "sampling_seconds": round(t_sampling, 1),
        "train_seconds": round(t_train, 1),
        "measure_seconds": round(t_measure, 1),
        "total_seconds": round(time.time() - t0, 1),
        "config": asdict(cfg),
        "torch_version": torch.__version__,
    }
    (out / "reviser_metrics.json").write_text(json.dumps(full, indent=2) + "\n")
    log(f"wrote {out / 'reviser'} in {full['total_seconds']:.0f} s")
    return full


def main(argv: Sequence[str] | None = None) -> None:
    defaults = ReviserTrainConfig()  # slots dataclass: class attributes are not the defaults
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for reviser/ and reviser_metrics.json")
    parser.add_argument("--policy", type=Path, default=TOY_POLICY_DIR, help="the toy policy to start from")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--threads", type=int, default=defaults.threads)
    parser.add_argument("--train-steps", type=int, default=defaults.train_steps)
    args = parser.parse_args(argv)
    cfg = ReviserTrainConfig(seed=args.seed, threads=args.threads, train_steps=args.train_steps)
    train(cfg, args.out, args.policy)


if __name__ == "__main__":
    main()
