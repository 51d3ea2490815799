"""Benchmark configurations: ``tiny`` (tests, seconds), ``cpu`` (this 2-core machine), ``gpu`` (paper scale).

Each is a frozen :class:`Bench`: one dotslab :class:`~dotslab.config.Config` that every method
shares (only ``method`` and ``seed`` change between runs, built with ``dataclasses.replace``) plus
the sizes of the predictor-quality, overhead and peer parts.

Decisions:
  1. ``cpu`` keeps the paper's ratios K/B = 1/2, ν = 2, δ = 1/2, C/B = 1 (as the ``cpu_demo``
     preset does), so generations per step are GRPO B·G, DOTS (B + K/ν)·G, DOTS+RR (δB + K/ν)·G,
     the same 1 : 1.25 : 0.75 as paper §7. It takes lr and every other training setting from
     ``cpu_demo`` and only shrinks sizes (completion length, steps, eval set).
  2. ``tiny`` trains the random-init tiny policy with :func:`dotslab.rewards.parity_reward` (1 if the completion has
     an even number of characters): deterministic given the sample, about 0.5 for a random
     policy, so groups have reward variance and every code path runs. Its numbers mean nothing.
  3. ``gpu`` is :func:`dotslab.config.paper` unchanged (B = 512, G = 8, K = 256, 60 steps, 3072
     new tokens). It needs the policy, encoder and dataset in the local HF cache and a trainer
     that places the model on CUDA; it is not run on the CPU machine.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from dotslab.config import Config, cpu_demo, paper, tiny as tiny_preset
from dotslab.records import Question
from dotslab.rewards import parity_reward


@dataclass(frozen=True)
class PredictorBench:
    probe_size: int
    """Held-out questions whose predicted difficulty is scored (never references, never fitted on)."""
    labelled_size: int
    """Other questions with measured difficulty: reference candidates and online-fitting labels."""
    group_size: int
    """Rollouts per question to measure actual difficulty (G)."""
    reference_sizes: tuple[int, ...]
    """K values to compare."""
    embedders: tuple[str, ...]
    """Embedder options to compare (dotslab.embed.make_embedder specs)."""
    history_size: int = 0
    """H: labelled questions that play the recent fresh groups' labels in history mode (disjoint from the
    references of the same draw); 0 leaves history mode out of the table."""
    repeats: int = 5
    """Random reference sets drawn per (embedder, K); metrics are averaged over them."""
    fit_steps: int = 100
    """Online BCE episodes on the labelled questions before the 'online' predictor predicts."""


@dataclass(frozen=True)
class PeerBench:
    prompts: int
    """Prompts (questions) per step, B."""
    generations: int
    """Completions per prompt, G (TRL's num_generations)."""
    max_new_tokens: int
    """Completion length cap (TRL's max_completion_length)."""
    warmup_steps: int = 1
    timed_steps: int = 3
    policy: str = "tiny"
    """'tiny' (random-init 2-layer Llama, for tests) or 'smollm2' (SmolLM2-135M-Instruct, fp32 weights); both
    implementations train the same weights."""
    dtype: str = "fp32"
    """'fp32', or 'bf16': bf16 autocast in both (TRL bf16=True, dotslab bf16_autocast) and a bf16 matmul floor."""
    task: str = "arithmetic_mix"
    """dotslab task whose training questions are the prompts of both implementations."""

    def __post_init__(self):
        if self.policy not in ("tiny", "smollm2"):
            raise ValueError(f"PeerBench.policy must be 'tiny' or 'smollm2', got {self.policy!r}")
        if self.dtype not in ("fp32", "bf16"):
            raise ValueError(f"PeerBench.dtype must be 'fp32' or 'bf16', got {self.dtype!r}")


@dataclass(frozen=True)
class Arm:
    """One compared variant: a name for tables and the Config keys it sets over the bench's shared config."""
    name: str
    settings: tuple[tuple[str, Any], ...]
    label: str = ""

    @property
    def method(self) -> str:
        return dict(self.settings)["method"]


def arm(name: str, label: str = "", **settings: Any) -> Arm:
    return Arm(name, tuple(sorted(settings.items())), label or name)


GRPO = arm("grpo", "GRPO", method="grpo")
DOTS_RR_HISTORY = arm("dots_rr", "DOTS+RR (history)", method="dots_rr", predictor_mode="history")
DOTS_RR_PAPER = arm("dots_rr_paper", "DOTS+RR (paper)", method="dots_rr", predictor_mode="paper")
DOTS_HISTORY = arm("dots", "DOTS (history)", method="dots", predictor_mode="history")
RR = arm("rr", "RR", method="rr")
DAPO = arm("dapo", "DAPO filter", method="dapo")
DOTS_RR_CAPPED = arm("dots_rr_cap2", "DOTS+RR (history, c capped at 2)", method="dots_rr", predictor_mode="history",
                     max_importance_weight=2.0)
DEFAULT_ARMS = (GRPO, DOTS_RR_HISTORY, DOTS_RR_PAPER)
MINI_ARMS = (GRPO, DOTS_HISTORY, RR, DOTS_RR_HISTORY, DOTS_RR_PAPER, DAPO, DOTS_RR_CAPPED)


@dataclass(frozen=True)
class Bench:
    name: str
    train: Config
    """Shared training config; methods and seeds vary by dataclasses.replace."""
    seeds: tuple[int, ...]
    predictor: PredictorBench
    peer: PeerBench
    arms: tuple[Arm, ...] = DEFAULT_ARMS
    """The compared variants; the one named 'grpo' is the baseline of part 1."""
    task_mix_size: int = 0
    """Questions in the generated arithmetic mix (dotslab.data.ARITHMETIC_MIX, one file per run); 0 keeps ``train.task``."""
    reward_fn: Optional[Callable[[str, Question], float]] = field(default=None, compare=False)
    """Replaces the configured verifier everywhere (tiny only)."""
    torch_threads: int = 0
    """torch.set_num_threads for the whole benchmark (0: torch's default, one per core). The tiny
    config uses 1: on a busy 2-core machine two OpenMP threads on 32-wide matrices run 10x slower."""
    sec_per_generated_token: float = 0.0
    """Cost model for the printed runtime estimate (seconds per completion token sampled)."""
    sec_per_trained_token: float = 0.0
    """Seconds per (prompt + completion) token of forward + backward in the update."""

    def run_config(self, arm: Arm, seed: int, run_root: str, task: str | None = None) -> Config:
        return Config.from_flat({**dict(arm.settings), "seed": seed, "run_root": run_root,
                                 "task": task or self.train.task, "run_name": f"{arm.name}-s{seed}"}, base=self.train)

    def arm(self, name: str) -> Arm:
        for a in self.arms:
            if a.name == name:
                return a
        raise KeyError(f"no arm {name!r} in bench {self.name!r}; arms: {[a.name for a in self.arms]}")


def tiny() -> Bench:
    base = Config.from_flat({
        "train_size": 40, "eval_size": 8, "total_steps": 4, "eval_every": 1, "eval_samples": 2,
        "checkpoint_every": 4, "max_new_tokens": 5}, base=tiny_preset())
    return Bench(
        name="tiny", train=base, seeds=(0, 1), task_mix_size=48, reward_fn=parity_reward,
        arms=(GRPO, DOTS_RR_HISTORY, DOTS_RR_PAPER, RR),
        predictor=PredictorBench(probe_size=8, labelled_size=12, group_size=2, reference_sizes=(2, 4),
                                 embedders=("hash", "policy"), history_size=4, repeats=2, fit_steps=4),
        peer=PeerBench(prompts=2, generations=2, max_new_tokens=4, warmup_steps=1, timed_steps=1),
        torch_threads=1, sec_per_generated_token=2e-3, sec_per_trained_token=2e-4)


def cpu() -> Bench:
    """The pre-registered protocol of benchmarks/README.md ("Protocol of the cpu benchmark")."""
    base = Config.from_flat({
        "policy": "smollm2", "eval_size": 280, "eval_greedy": True, "eval_samples": 1, "total_steps": 32,
        "eval_every": 8, "checkpoint_every": 32, "max_new_tokens": 24, "bf16_autocast": True,
        "questions_per_step": 8, "minibatch_questions": 8, "group_size": 4, "micro_batch_size": 16,
        "reference_set_size": 4, "steps_per_round": 2, "fresh_fraction": 0.5, "buffer_capacity": 8,
        "embedder": "minilm", "reward": "exact", "threads": 2,
        # pinned as registered (the Config default then); the DOTS+RR arms name their own mode, and GRPO's
        # runs ignore it, but a changed default must not make the committed runs' configs stale (--resume)
        "predictor_mode": "paper",
        # the cpu_demo lr when it was registered (cpu_demo has used 1e-5 since the cpu_sampled pilot)
        "learning_rate": 3e-5,
        # added to dotslab after the committed runs, which kept every activation (memory only; the math is the same)
        "gradient_checkpointing": False}, base=cpu_demo())
    return Bench(
        name="cpu", train=base, seeds=(0, 1, 2, 3, 4), task_mix_size=400, arms=(GRPO, DOTS_RR_HISTORY, DOTS_RR_PAPER),
        predictor=PredictorBench(probe_size=32, labelled_size=64, group_size=4, reference_sizes=(4, 16, 32),
                                 embedders=("minilm", "policy", "hash"), history_size=32, repeats=5, fit_steps=100),
        peer=PeerBench(prompts=8, generations=4, max_new_tokens=24, warmup_steps=1, timed_steps=3, policy="smollm2",
                       dtype="bf16"),
        torch_threads=2, sec_per_generated_token=0.0035, sec_per_trained_token=0.0035)


CPU_SAMPLED_LEARNING_RATE = 1e-5
"""lr of ``cpu_sampled``: the pilot's choice by the amendment's rule (benchmarks/README.md): GRPO gained
+0.224 / +0.220 at 1e-5, +0.032 / +0.110 at 3e-5 and fell at 1e-4 (pilot seeds 100 / 101)."""


def cpu_sampled() -> Bench:
    """The ``cpu`` protocol under the paper's sampled evaluation (benchmarks/README.md, "Amendment")."""
    bench = cpu()
    train = Config.from_flat({"eval_greedy": False, "eval_samples": 4, "eval_temperature": 0.6, "eval_top_p": 0.95,
                              "learning_rate": CPU_SAMPLED_LEARNING_RATE}, base=bench.train)
    return dataclasses.replace(bench, name="cpu_sampled", train=train)


def mini() -> Bench:
    """The pre-registered protocol of benchmarks/README.md ("Protocol of the mini benchmark")."""
    base = Config.from_flat({"preset": "mini", "checkpoint_every": 0, "threads": 1})
    return Bench(
        name="mini", train=base, seeds=tuple(range(10)), arms=MINI_ARMS,
        predictor=PredictorBench(probe_size=64, labelled_size=128, group_size=8, reference_sizes=(8, 16, 64),
                                 embedders=("minilm", "policy", "hash"), history_size=64, repeats=5, fit_steps=100),
        peer=PeerBench(prompts=16, generations=8, max_new_tokens=19, warmup_steps=1, timed_steps=3),
        torch_threads=1, sec_per_generated_token=6e-5, sec_per_trained_token=3e-5)


def gpu() -> Bench:
    return Bench(
        name="gpu", train=paper(), seeds=(0, 1, 2),
        predictor=PredictorBench(probe_size=256, labelled_size=512, group_size=8, reference_sizes=(128, 256),
                                 embedders=("minilm", "policy", "hash"), repeats=5, fit_steps=500),
        peer=PeerBench(prompts=16, generations=8, max_new_tokens=128, warmup_steps=1, timed_steps=3, policy="smollm2"),
        sec_per_generated_token=2e-4, sec_per_trained_token=2e-5)


CONFIGS: dict[str, Callable[[], Bench]] = {"tiny": tiny, "cpu": cpu, "cpu_sampled": cpu_sampled, "mini": mini,
                                           "gpu": gpu}


def with_settings(bench: Bench, settings: Sequence[str]) -> Bench:
    """``bench`` with its training config overridden by ``KEY=VALUE`` texts (parsed by type, as ``-p``)."""
    if not settings:
        return bench
    from dotslab.params import parse_value

    pairs = dict(kv.split("=", 1) for kv in settings)
    return dataclasses.replace(bench, train=Config.from_flat({k: parse_value(v, k) for k, v in pairs.items()},
                                                             base=bench.train))


def estimate_seconds(bench: Bench, parts: tuple[str, ...]) -> dict[str, float]:
    """Rough wall-clock per part on a quiet machine, from the bench's per-token cost model.

    A step costs (completions sampled) x new tokens x ``sec_per_generated_token`` plus B·G trained rows
    x (their share of the shared prompt + new tokens) x ``sec_per_trained_token`` (every row counted, an
    upper bound: rows without reward spread are skipped); evaluations, model loads and checkpoints are
    added per run.
    """
    c, g = bench.train, bench.train.grpo
    prompt_tokens = 50  # chat template + question, SmolLM2 tokenizer; shared by a group's G rows
    tok, gen_t, trn_t = g.max_new_tokens, bench.sec_per_generated_token, bench.sec_per_trained_token
    B, G, K, mu = g.questions_per_step, g.group_size, c.predictor.reference_set_size, c.selection.steps_per_round
    evals = (c.total_steps // c.eval_every + 1 + bool(c.total_steps % c.eval_every)) if c.eval_every else 0
    eval_s = evals * c.eval_size * (1 if c.eval_greedy else c.eval_samples) * tok * gen_t
    out: dict[str, float] = {}
    if {"timetotarget", "overhead"} & set(parts):
        total = 0.0
        arms = bench.arms if "timetotarget" in parts else tuple(a for a in bench.arms if a.name == "dots_rr")
        for arm in arms:
            run_cfg = bench.run_config(arm, bench.seeds[0], "/tmp")
            for step in range(c.total_steps):
                fresh = B if step < mu else run_cfg.fresh_per_step
                refs = K / mu if run_cfg.uses_selection else 0
                total += (fresh + refs) * G * tok * gen_t
                total += B * G * (prompt_tokens / G + tok) * trn_t
            total += eval_s + 15  # + model load and the final checkpoint
        out["training"] = total * len(bench.seeds)
    if "predictor" in parts:
        p = bench.predictor
        out["predictor"] = 2 * (p.probe_size + p.labelled_size) * p.group_size * tok * gen_t + 30
    if "peer" in parts:
        per_step = 3 if bench.peer.policy == "tiny" else 25  # TRL's SmolLM2 step is the slower of the two
        out["peer"] = 30 + 2 * (bench.peer.warmup_steps + bench.peer.timed_steps) * per_step
    return out
